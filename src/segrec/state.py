"""Fitted state as arrays + JSON: how feature blocks and segmenters are saved without pickle.

A fitted object's learned attributes (public names ending in ``_``) are split
into numpy arrays, which go to safetensors, and plain values (numbers, strings,
lists, tuples, dicts of those), which go to JSON. Tuples and dicts of arrays
survive the round trip; anything else (a scikit-learn estimator, a torch module)
is refused by name, so a class holding one must save it as arrays itself.

Example:
    >>> import numpy as np
    >>> tensors, meta = encode_state({"centers_": np.eye(2), "names_": ("a", "b"), "k_": 2})
    >>> sorted(tensors), decode_state(tensors, meta)["names_"]
    (['centers_'], ('a', 'b'))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["decode_state", "encode_state", "fitted_attributes"]

_ARRAY, _ARRAYS, _TUPLE = "__array__", "__arrays__", "__tuple__"


def fitted_attributes(obj: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The learned attributes of ``obj``: public names ending in ``_``, minus ``skip``."""
    skip = set(skip)
    return {k: v for k, v in vars(obj).items()
            if k.endswith("_") and not k.startswith("_") and k not in skip}


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_plain(v, where) for v in value]}
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be saved as arrays + JSON")


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_unplain(v) for v in value[_TUPLE])
        return {k: _unplain(v) for k, v in value.items()}
    return value


def encode_state(values: dict[str, Any], prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split ``values`` into ``(tensors, meta)``; array keys are ``prefix + name``.

    Raises:
        TypeError: A value is neither an array, a dict of arrays nor plain JSON data.
    """
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for name, value in values.items():
        key = prefix + name
        if isinstance(value, np.ndarray):
            tensors[key] = np.ascontiguousarray(value)
            meta[name] = {_ARRAY: key}
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            for sub, arr in value.items():
                tensors[f"{key}/{sub}"] = np.ascontiguousarray(arr)
            meta[name] = {_ARRAYS: [key, list(value)]}
        else:
            meta[name] = _plain(value, name)
    return tensors, meta


def decode_state(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """The values :func:`encode_state` split, put back together."""
    out: dict[str, Any] = {}
    for name, value in meta.items():
        if isinstance(value, dict) and set(value) == {_ARRAY}:
            out[name] = tensors[value[_ARRAY]]
        elif isinstance(value, dict) and set(value) == {_ARRAYS}:
            key, subs = value[_ARRAYS]
            out[name] = {sub: tensors[f"{key}/{sub}"] for sub in subs}
        else:
            out[name] = _unplain(value)
    return out
