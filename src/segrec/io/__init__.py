"""Artifact I/O: atomic directories, safetensors, JSON and Parquet; never pickle.

An artifact directory is first written under a temporary sibling name and then
renamed into place, so a crash mid-save leaves either the old artifact or the new
one, never a half-written directory that ``load`` would accept.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SegrecError
from ._atomic import (
    ARTIFACT_MARKERS,
    STALE_AFTER_S,  # noqa: F401 - public (tests and callers import it from segrec.io)
    atomic_dir,
    atomic_write_text,
    check_replaceable,
    sweep_stale,
)

__all__ = [
    "ARTIFACT_MARKERS",
    "atomic_dir",
    "check_replaceable",
    "confined_reads",
    "atomic_write_text",
    "load_tensors",
    "read_json",
    "read_table",
    "save_tensors",
    "sweep_stale",
    "write_json",
    "write_table",
]


@dataclass(frozen=True)
class _Confinement:
    root: Path
    files: frozenset[str] | None


_CONFINED: contextvars.ContextVar[_Confinement | None] = contextvars.ContextVar("segrec_confined",
                                                                               default=None)


@contextlib.contextmanager
def confined_reads(root: str | os.PathLike, files: Iterable[str] | None = None) -> Iterator[None]:
    """Make :func:`read_json`, :func:`read_table` and :func:`load_tensors` refuse reads outside ``root``.

    An artifact directory is untrusted input: a crafted ``model.json`` may name a
    sub-model ``../../elsewhere`` and a directory may hold symbolic links out of it.
    Inside this context every read must resolve to a regular file under ``root``,
    reached without following a link, and (when ``files`` is given) be one of those
    relative paths, i.e. a file the manifest lists and :func:`segrec.artifacts.verify_run`
    checked. Nested uses keep the outermost root.

    Args:
        root: The artifact directory.
        files: Relative POSIX paths that may be read; None allows any file under ``root``.
    """
    if _CONFINED.get() is not None:  # a sub-model loaded by its parent: the outer rule holds
        yield
        return
    token = _CONFINED.set(_Confinement(Path(os.path.abspath(root)),
                                       None if files is None else frozenset(files)))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def _confined(path: str | os.PathLike) -> Path:
    """``path``, checked against the active :func:`confined_reads` rule (if any)."""
    rule = _CONFINED.get()
    path = Path(path)
    if rule is None:
        return path
    absolute = Path(os.path.abspath(path))  # ".." resolved lexically, links not followed
    try:
        rel = absolute.relative_to(rule.root)
    except ValueError:
        raise SegrecError(f"{path}: outside the artifact directory {rule.root}; a saved name points "
                          "out of it, so the artifact was tampered with") from None
    here = rule.root
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            raise SegrecError(f"{here}: is a symbolic link; artifact directories never contain links, "
                              "so this one was modified after saving")
    if here.exists() and not here.is_file():  # a FIFO or device would block or stream forever
        raise SegrecError(f"{here}: is not a regular file; the artifact was modified after saving")
    if rule.files is not None and rel.as_posix() not in rule.files:
        raise SegrecError(f"{rule.root}: {rel.as_posix()} is not listed in manifest.json, so it is not "
                          "read; the artifact is incomplete or was modified after saving")
    return absolute


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy scalars and arrays allowed)."""
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, raising :class:`SegrecError` naming the file if it is missing or bad."""
    try:
        return json.loads(_confined(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError) as exc:  # the artifact "directory" is a file
        raise SegrecError(f"{path}: missing; is this a segrec artifact directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # not UTF-8; nested too deep
        raise SegrecError(f"{path}: corrupt JSON ({str(exc)[:200]})") from exc
    except OSError as exc:
        raise SegrecError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


#: safetensors dtype codes, in the order the format's reference writer sorts tensors by
#: (descending), so the files are byte-identical to ``safetensors.numpy.save_file``'s.
_ST_DTYPES = {np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
              np.dtype(np.int16): "I16", np.dtype(np.uint16): "U16", np.dtype(np.float16): "F16",
              np.dtype(np.int32): "I32", np.dtype(np.uint32): "U32", np.dtype(np.float32): "F32",
              np.dtype(np.float64): "F64", np.dtype(np.int64): "I64", np.dtype(np.uint64): "U64"}
_ST_ORDER = ("BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64", "I64", "U64")


def save_tensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Save named numpy arrays in the safetensors format, streaming them to the file.

    ``safetensors.numpy.save_file`` first copies every array into one bytes object, a
    second 1.4 GB at peak for a 19k-item EASE; this writes the same bytes (header, then
    each array's buffer) without that copy. :func:`load_tensors` / safetensors read it.
    """
    arrays = {}
    for name, value in tensors.items():
        a = np.ascontiguousarray(value)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype not in _ST_DTYPES:
            raise SegrecError(f"{path}: cannot save tensor {name!r} of dtype {a.dtype}")
        arrays[name] = a
    names = sorted(arrays, key=lambda k: (-_ST_ORDER.index(_ST_DTYPES[arrays[k].dtype]), k))
    header, offset = {}, 0
    for name in names:
        a = arrays[name]
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for name in names:
            if arrays[name].nbytes:
                fh.write(memoryview(arrays[name].reshape(-1)).cast("B"))


def load_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load named arrays saved by :func:`save_tensors`; a corrupt file is a SegrecError."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(_confined(path)))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing tensor file") from exc
    except SegrecError:
        raise
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise SegrecError(f"{path}: corrupt or truncated tensor file ({exc})") from exc


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet."""
    frame.to_parquet(path, index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table`."""
    try:
        return pd.read_parquet(_confined(path))
    except FileNotFoundError as exc:
        raise SegrecError(f"{path}: missing table") from exc
    except SegrecError:
        raise
    except Exception as exc:
        raise SegrecError(f"{path}: corrupt Parquet table ({exc})") from exc
