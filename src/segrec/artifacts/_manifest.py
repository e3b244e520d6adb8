"""A run directory's manifest: what it records, and checking a directory against it."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import SegrecError
from ..io import read_json
from ..models import Recommender

if TYPE_CHECKING:
    from ..experiment import RunResult


def _walk_files(root: Path) -> list[str]:
    """Every non-directory entry under ``root`` (links and special files included), relative, POSIX."""
    import os

    out = []
    for here, dirs, files in os.walk(root, followlinks=False):
        base = Path(here)
        # a link to a directory shows up in dirs; it is an entry of its own, never walked into
        out += [(base / d).relative_to(root).as_posix() for d in dirs if (base / d).is_symlink()]
        out += [(base / f).relative_to(root).as_posix() for f in files]
    return sorted(out)



def _plain_relative(rel: str) -> bool:
    """Whether ``rel`` is a plain relative POSIX path (no absolute path, ``..``, ``.``, backslash or NUL)."""
    p = PurePosixPath(rel)
    return (bool(rel) and not p.is_absolute() and "\\" not in rel and "\x00" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))




#: name of the manifest file of a run directory
MANIFEST = "manifest.json"
#: bumped when the run-directory layout changes incompatibly (2: the composite artifact with its
#: segmenter; ``segmenter/`` replaces the naive-Bayes ``router/``)
FORMAT_VERSION = 2


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from .. import __version__

    out = {"segrec": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "pandas", "pyarrow", "torch", "safetensors", "pydantic", "scikit-learn"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_table(root: Path) -> dict[str, dict[str, Any]]:
    return {f.relative_to(root).as_posix(): {"sha256": _sha256(f), "bytes": f.stat().st_size}
            for f in sorted(root.rglob("*")) if f.is_file() and f.name != MANIFEST}


def _costs(systems: dict[str, Recommender]) -> dict[str, dict[str, float]]:
    from ..evaluate.cost import cost_figures

    return cost_figures(systems)


def _manifest(result: RunResult, summary: dict[str, Any], root: Path,
              costs: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    import datetime as _dt

    from .. import __version__

    return {
        "format": "segrec-run", "format_version": FORMAT_VERSION, "segrec_version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(), "versions": _versions(),
        "systems": sorted(result.systems), "best_system": summary["best_system"],
        "data_fingerprint": summary["data"]["fingerprint"], "data": summary["data"],
        "config": summary["config"],
        "metrics": {n: {k: v for k, v in s["overall"].items() if k in ("ndcg@10", "recall@10", "ndcg@20")}
                    for n, s in summary["systems"].items()},
        "costs": _costs(result.systems) if costs is None else costs,
        "files": _file_table(root),
    }


#: a system name in a manifest: one plain path component (it names ``systems/<name>/``)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: files a run directory must list (and so have verified) before anything is loaded
REQUIRED = ("results.json", "segments.parquet")


def verify_run(path: str | Path, manifest: dict[str, Any] | None = None) -> frozenset[str]:
    """Check a run directory against its manifest, treating both as untrusted input.

    Every listed path must be relative and stay inside ``path`` (no absolute path, no
    ``..``, no link anywhere on the way), every listed file must exist with the recorded
    size and sha256, the directory may hold no links, FIFOs or devices, and the
    manifest's system names must be plain names of listed sub-directories. Checksums
    catch damage, not intent (whoever edits a file can re-hash it), which is why the
    loaders also confine every read (:func:`segrec.io.confined_reads`) and check the
    tensors they get (:func:`segrec.models.base.check_tensors`).

    Returns:
        The verified relative paths: the only files loading may read.

    Raises:
        SegrecError: The manifest is missing, malformed or lacks checksums, a path
            escapes the directory, or a file is missing, changed, a link or not a
            regular file (the message names the file).
    """
    import warnings

    from .. import __version__
    from ..errors import SegrecWarning

    path = Path(path)
    manifest = manifest if manifest is not None else read_json(path / MANIFEST)
    where = f"{path}/{MANIFEST}"
    if not isinstance(manifest, dict) or manifest.get("format") != "segrec-run":
        raise SegrecError(f"{where}: not a segrec run manifest; pass the --out directory of `segrec run`")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SegrecError(f"{where}: has no file checksums, so nothing in {path} can be trusted; re-run "
                          "`segrec run` to write a complete artifact")
    _check_entries(files, where)
    _check_no_special_files(path)
    _check_listed_files(path, files)
    _check_systems(manifest, files, where)
    extra = sorted(set(_walk_files(path)) - set(files) - {MANIFEST})
    if extra:
        warnings.warn(f"{path}: files not in the manifest are ignored: {extra[:5]}", SegrecWarning,
                      stacklevel=3)
    saved = manifest.get("segrec_version")
    if saved and saved != __version__:
        warnings.warn(f"{path}: written by segrec {saved}, loading with {__version__}; results may differ",
                      SegrecWarning, stacklevel=3)
    return frozenset(files) | {MANIFEST}


def _check_entries(files: dict, where: str) -> None:
    """Every manifest entry is a plain relative path with a size and a hex sha256."""
    for rel, want in files.items():
        if not isinstance(rel, str) or not _plain_relative(rel) or len(rel) > 1024:
            raise SegrecError(f"{where}: file entry {str(rel)[:80]!r} is not a plain relative path inside "
                              "the run directory; the manifest was tampered with")
        if (not isinstance(want, dict) or not isinstance(want.get("bytes"), int) or want["bytes"] < 0
                or not isinstance(want.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", want["sha256"])):
            raise SegrecError(f"{where}: the entry for {rel} needs 'bytes' and a hex 'sha256'; "
                              "the manifest is corrupt")


def _check_no_special_files(path: Path) -> None:
    """The run directory holds only regular files: no links, FIFOs or devices."""
    import os
    import stat

    for entry in _walk_files(path):
        mode = os.lstat(path / entry).st_mode
        if stat.S_ISLNK(mode):
            raise SegrecError(f"{path}: {entry} is a symbolic link; a run directory never contains links, "
                              "so it was modified after saving")
        if not stat.S_ISREG(mode):
            raise SegrecError(f"{path}: {entry} is not a regular file; the run directory was modified")


def _check_listed_files(path: Path, files: dict) -> None:
    """Every listed file is there, reached without a link, with the recorded size and sha256."""
    for rel, want in files.items():
        f = path / rel
        # every folder on the way must be a real folder inside path (a link would lead out)
        here = path
        for part in PurePosixPath(rel).parts[:-1]:
            here = here / part
            if here.is_symlink() or not here.is_dir():
                raise SegrecError(f"{path}: file {rel} listed in {MANIFEST} is missing; "
                                  "the artifact is incomplete")
        if f.is_symlink() or not f.is_file():
            raise SegrecError(f"{path}: file {rel} listed in {MANIFEST} is missing; "
                              "the artifact is incomplete")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise SegrecError(f"{path}: {rel} has {size} bytes, expected {want['bytes']} "
                              f"({MANIFEST}); the file was truncated or modified after saving")
        got = _sha256(f)
        if got != want["sha256"]:
            raise SegrecError(f"{path}: checksum mismatch for {rel}: expected sha256 "
                              f"{want['sha256'][:16]}..., found {got[:16]}...; "
                              "the file was modified after saving")


def _check_systems(manifest: dict, files: dict, where: str) -> None:
    """The required files are listed and the system names are plain names of saved systems."""
    missing = [r for r in REQUIRED if r not in files]
    if missing:
        raise SegrecError(f"{where}: does not list {missing[0]}; the artifact is incomplete")
    systems = manifest.get("systems")
    if not isinstance(systems, list) or not systems:
        raise SegrecError(f"{where}: 'systems' must list the saved systems; the manifest is corrupt")
    for name in systems:
        plain = isinstance(name, str) and _NAME.fullmatch(name)
        if not plain or f"systems/{name}/model.json" not in files:
            raise SegrecError(f"{where}: system {str(name)[:80]!r} is not a saved system of this run "
                              "(names are plain words with a listed systems/<name>/model.json)")
    best = manifest.get("best_system")
    if best is not None and best not in systems:
        raise SegrecError(f"{where}: best_system {str(best)[:80]!r} is not one of its systems {systems}")
