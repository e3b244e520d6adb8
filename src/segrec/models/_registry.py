"""Which Recommender class a saved name means, and whether a model is fitted.

The lowest module of :mod:`segrec.models`: ``Recommender.__init_subclass__``
(``base.py``) registers every class that declares a ``name``, and loading
(``_artifact.py``) looks the saved name up here, so neither imports the other
and nothing imports the models package to find a class.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from ..errors import NotFittedError, SegrecError

__all__ = ["check_is_fitted", "model_class", "register", "registered_models"]

#: saved name -> class; filled by ``Recommender.__init_subclass__`` (see the module docstring)
_REGISTRY: dict[str, type] = {}


def register(cls: type) -> None:
    """Register ``cls`` under its ``name`` (a name taken by another class is an error)."""
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"{cls.__qualname__}: saved name {cls.name!r} is taken by {other.__qualname__}")
    _REGISTRY[cls.name] = cls


def check_is_fitted(model: Any) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has been fitted."""
    if getattr(model, "item_vocab_", None) is None:
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet; call fit(train) first."
        )


def model_class(name: str) -> type:
    """The Recommender class saved under ``name``.

    Raises:
        SegrecError: No class is registered under that name.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise SegrecError(f"unknown model class {name!r}; known: {sorted(_REGISTRY)}")
    return cls


def registered_models() -> MappingProxyType:
    """Read-only view: saved name -> class of every Recommender defined so far."""
    return MappingProxyType(_REGISTRY)
