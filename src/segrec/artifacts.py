"""Run artifacts: save a finished run, verify its checksums, load it back for serving.

A run directory holds ``results.json``, ``manifest.json`` (versions, data
fingerprint, sha256 of every file), ``segments.parquet``, ``systems/<name>/`` (the
``segmented`` composite is one artifact with its tiers and segmenter inside),
``items.parquet``, ``segmenter/`` (the run's fitted segmentation pipeline, which
places new users for every saved system) and the HTML report. Everything is written
atomically (:func:`segrec.io.atomic_dir`) and nothing is pickled; :func:`update_run`
(``segrec update``) appends known users' new interactions to a saved run without a
refit. The server and ``segrec recommend`` import only this module (and what it
loads), never the experiment runner.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import SegrecError
from .io import atomic_dir, check_replaceable, confined_reads, read_json, read_table, write_json, write_table
from .models import Recommender

if TYPE_CHECKING:  # the experiment runner is not imported by loading (serve, recommend)
    from .experiment import RunResult

__all__ = ["MANIFEST", "LoadedRun", "RunUpdate", "check_out", "load_run", "save_run", "update_run",
           "verify_run"]

log = logging.getLogger(__name__)


def check_out(out: str | Path, *, overwrite: bool = True, flag: str = "--out") -> str:
    """May a run be saved to ``out``? Called before any work, so a refusal costs nothing.

    ``out`` may be absent, an empty directory, or a previous run (recognised by its
    ``manifest.json``) holding only files that manifest lists; replacing a previous
    run needs ``overwrite``. Anything else would delete files segrec did not write.

    Returns:
        ``"new"``, ``"empty"`` or ``"run"``.

    Raises:
        SegrecError: One line naming ``flag``, what is there and what to do.
    """
    out = Path(out)
    what = f"{flag} {out}:"
    kind = check_replaceable(out, what=flag)
    if kind in ("new", "empty"):
        return kind
    manifest = _read_manifest_quietly(out)
    if manifest is None:
        raise SegrecError(f"{what} holds a saved segrec model or segmentation, not a run; choose a new "
                          "or empty directory")
    listed = set(manifest.get("files") or {}) | {MANIFEST}
    unlisted = sorted(set(_walk_files(out)) - listed)
    if unlisted:
        shown = ", ".join(unlisted[:3]) + (", ..." if len(unlisted) > 3 else "")
        raise SegrecError(f"{what} is a previous run, but it also holds files segrec did not write "
                          f"({shown}); move them out or choose another {flag}")
    if not overwrite:
        raise SegrecError(f"{what} holds a previous run; pass --overwrite to replace it, or choose "
                          f"another {flag}")
    return "run"


def _read_manifest_quietly(path: Path) -> dict[str, Any] | None:
    """The manifest of a previous run at ``path``, or None when it is not one."""
    try:
        manifest = read_json(path / MANIFEST)
    except SegrecError:
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != "segrec-run":
        return None
    if not isinstance(manifest.get("files"), dict):
        return None
    return manifest


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


def _discard_previous_run(old: Path) -> None:
    """Delete a swapped-out previous run: only the files its manifest lists, then the emptied folders.

    Whatever else is there (a file a user put into the run directory while this run
    was computing) is kept: the folder is renamed to a visible ``<name>.kept-<time>``
    beside the new run and a warning names it.
    """
    import os
    import shutil
    import time

    manifest = _read_manifest_quietly(old)
    if manifest is None:
        if not _walk_files(old):  # an empty directory that the new run replaced
            shutil.rmtree(old, ignore_errors=True)
            return
        listed: set[str] = set()
    else:
        listed = set(manifest["files"]) | {MANIFEST}
    for rel in listed:
        f = old / rel
        if _plain_relative(rel) and (f.is_file() or f.is_symlink()):
            f.unlink(missing_ok=True)
    for here, _, _ in sorted(os.walk(old, followlinks=False), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(here)  # only empty folders go
    if old.exists():
        name = old.name.split(".tmp-")[0].split(".old-")[0].lstrip(".")
        kept = old.parent / f"{name}.kept-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(old, kept)
        log.warning("the previous run held files segrec did not write; they are kept in %s", kept)


def _plain_relative(rel: str) -> bool:
    """Whether ``rel`` is a plain relative POSIX path (no absolute path, ``..``, ``.``, backslash or NUL)."""
    p = PurePosixPath(rel)
    return (bool(rel) and not p.is_absolute() and "\\" not in rel and "\x00" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def save_run(result: RunResult, out: str | Path, *, overwrite: bool = True) -> Path:
    """Write the run's artifacts to ``out`` atomically, with a checksummed manifest.

    Layout: ``results.json``, ``manifest.json``, ``segments.parquet`` (user_id,
    segment), ``systems/<name>/`` (one saved Recommender each), ``items.parquet``
    (titles for serving, when the data has them), ``segmenter/`` (the fitted
    segmentation pipeline that places new users), ``report.json`` + ``report.html`` (the self-contained
    HTML report, :mod:`segrec.report`). ``manifest.json`` records versions, the resolved config,
    the data fingerprint, the headline metrics, analytic costs and the sha256 of
    every other file; :func:`load_run` verifies them. The time this takes is the
    run's ``save`` stage (up to ``results.json``, which records it).

    Args:
        result: The finished run.
        out: The run directory: absent, empty, or a previous run (see :func:`check_out`).
        overwrite: Replace a previous run at ``out`` (the CLI passes ``--overwrite``).

    Raises:
        SegrecError: ``out`` holds something this save must not replace.
    """
    from .experiment import results_dict

    out = Path(out)
    check_out(out, overwrite=overwrite, flag="out")
    with atomic_dir(out, discard=_discard_previous_run) as tmp:
        with result.stages.stage("save"):
            (tmp / "systems").mkdir()
            for name, model in result.systems.items():
                (tmp / "systems" / name).mkdir()
                model.save_into(tmp / "systems" / name)
            write_table(tmp / "segments.parquet", pd.DataFrame({
                "user_id": result.data.user_vocab.ids.astype(str), "segment": result.segments}))
            if result.data.item_table is not None:
                items = result.data.item_table.copy()
                if "item_id" not in items:
                    items.insert(0, "item_id", result.data.item_vocab.ids.astype(str))
                write_table(tmp / "items.parquet", items.astype({c: str for c in items.columns
                                                                  if items[c].dtype == object}))
            if result.segmenter is not None:
                (tmp / "segmenter").mkdir()
                result.segmenter.save_into(tmp / "segmenter")
            costs = _costs(result.systems)
            _write_report(result, tmp, costs)
        summary = results_dict(result)
        write_json(tmp / "results.json", summary)
        write_json(tmp / MANIFEST, _manifest(result, summary, tmp, costs))
    return out


def _write_report(result: RunResult, directory: Path, costs: dict[str, dict[str, float]]) -> None:
    """``report.json`` + ``report.html`` (issue 7); a report failure never loses a finished run."""
    from .report import REPORT_DATA, REPORT_HTML, build_report_data, write_report

    try:
        payload = build_report_data(result, costs=costs)
        write_json(directory / REPORT_DATA, payload)
        write_report(payload, directory / REPORT_HTML)
    except Exception as exc:
        log.warning("no HTML report: %s", exc, exc_info=True)


#: name of the manifest file of a run directory
MANIFEST = "manifest.json"
#: bumped when the run-directory layout changes incompatibly (2: the composite artifact with its
#: segmenter; ``segmenter/`` replaces the naive-Bayes ``router/``)
FORMAT_VERSION = 2


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from . import __version__

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
    from .evaluate.cost import cost_figures

    return cost_figures(systems)


def _manifest(result: RunResult, summary: dict[str, Any], root: Path,
              costs: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    import datetime as _dt

    from . import __version__

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
    import os
    import stat
    import warnings

    from . import __version__
    from .errors import SegrecWarning

    path = Path(path)
    manifest = manifest if manifest is not None else read_json(path / MANIFEST)
    where = f"{path}/{MANIFEST}"
    if not isinstance(manifest, dict) or manifest.get("format") != "segrec-run":
        raise SegrecError(f"{where}: not a segrec run manifest; pass the --out directory of `segrec run`")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SegrecError(f"{where}: has no file checksums, so nothing in {path} can be trusted; re-run "
                          "`segrec run` to write a complete artifact")
    for rel, want in files.items():
        if not isinstance(rel, str) or not _plain_relative(rel) or len(rel) > 1024:
            raise SegrecError(f"{where}: file entry {str(rel)[:80]!r} is not a plain relative path inside "
                              "the run directory; the manifest was tampered with")
        if (not isinstance(want, dict) or not isinstance(want.get("bytes"), int) or want["bytes"] < 0
                or not isinstance(want.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", want["sha256"])):
            raise SegrecError(f"{where}: the entry for {rel} needs 'bytes' and a hex 'sha256'; "
                              "the manifest is corrupt")
    for entry in _walk_files(path):
        mode = os.lstat(path / entry).st_mode
        if stat.S_ISLNK(mode):
            raise SegrecError(f"{path}: {entry} is a symbolic link; a run directory never contains links, "
                              "so it was modified after saving")
        if not stat.S_ISREG(mode):
            raise SegrecError(f"{path}: {entry} is not a regular file; the run directory was modified")
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
    extra = sorted(set(_walk_files(path)) - set(files) - {MANIFEST})
    if extra:
        warnings.warn(f"{path}: files not in the manifest are ignored: {extra[:5]}", SegrecWarning,
                      stacklevel=3)
    saved = manifest.get("segrec_version")
    if saved and saved != __version__:
        warnings.warn(f"{path}: written by segrec {saved}, loading with {__version__}; results may differ",
                      SegrecWarning, stacklevel=3)
    return frozenset(files) | {MANIFEST}


@dataclass
class LoadedRun:
    """Saved systems and results read back by :func:`load_run`.

    Every read goes through :func:`segrec.io.confined_reads`: only files the manifest
    lists (and :func:`verify_run` checked) are read, and none outside :attr:`path`.
    """

    path: Path
    manifest: dict[str, Any]
    results: dict[str, Any]
    files: frozenset[str] | None = field(default=None, repr=False)

    def _reads(self):
        return confined_reads(self.path, self.files)

    @property
    def system_names(self) -> list[str]:
        """Names of the saved systems."""
        return list(self.manifest["systems"])

    def system(self, name: str | None = None) -> Recommender:
        """Load one saved system (default: the run's best on inner validation, ``best_system``)."""
        name = name or self.manifest.get("best_system")
        if name not in self.manifest["systems"]:
            raise SegrecError(f"{self.path}: no system {name!r}; saved: {', '.join(self.system_names)}")
        with self._reads():
            return Recommender.load(self.path / "systems" / name)

    def segments(self) -> pd.DataFrame:
        """The saved user -> segment table."""
        with self._reads():
            seg = read_table(self.path / "segments.parquet")
        ok = list(seg.columns[:2]) == ["user_id", "segment"] and pd.api.types.is_integer_dtype(seg["segment"])
        if not ok:
            raise SegrecError(f"{self.path}: segments.parquet must have columns user_id, segment (integers); "
                              "the artifact is corrupt")
        return seg

    def items(self) -> pd.DataFrame | None:
        """The saved items table (``item_id``, ``title``, ...), or None."""
        if self.files is not None and "items.parquet" not in self.files:
            return None
        f = self.path / "items.parquet"
        if not f.exists():
            return None
        with self._reads():
            items = read_table(f)
        if "item_id" not in items:
            raise SegrecError(f"{self.path}: items.parquet has no item_id column; the artifact is corrupt")
        return items

    def segmenter(self):
        """The run's fitted segmentation pipeline (places new users), or None.

        Checked by one trial placement, so a crafted state fails here (exit 2 / HTTP 422),
        not as a 500 on every new-user request.
        """
        from .models._checks import loading
        from .segment import SegmentationPipeline

        directory = self.path / "segmenter"
        if self.files is not None and not any(f.startswith("segmenter/") for f in self.files):
            return None
        if not directory.is_dir():
            return None
        with self._reads(), loading(directory):
            return SegmentationPipeline.load(directory)

    def router(self, system: str | None = None, *, ann: str = "auto", ann_min_items: int | None = None,
               **routing: Any):
        """A :class:`~segrec.route.router.Router` serving one saved system.

        Args:
            system: System to serve; default the run's ``best_system`` (the best on inner
                validation), or ``segmented`` when a routing policy is given.
            ann: Top-k for known users of cached tiers: ``auto``, ``exact`` or ``on``
                (see :class:`~segrec.route.router.Router`).
            ann_min_items: Catalogue size from which ``auto`` uses an ANN index (default
                :data:`segrec.route._ann.ANN_MIN_ITEMS`).
            **routing: Policy changes for a segmented system, e.g. ``policy="budget",
                budget_fraction=0.3`` (re-routed from the saved validation table, no refit).
                A plain system is served as a one-tier composite with the run's segments
                and segmenter.
        """
        from .route import Router, SegmentedRecommender

        name = system or ("segmented" if routing and "segmented" in self.system_names
                          else self.manifest.get("best_system"))
        model = self.system(name)
        served = model.name if name is None else name
        composite = isinstance(model, SegmentedRecommender)
        if routing:
            if not composite:
                raise SegrecError(f"system {model.name!r} is not routed; a routing policy needs 'segmented'")
            model = model.reroute(**routing)
        if not composite:
            seg = self.segments()
            segments = None
            if len(seg):
                table = pd.Series(seg["segment"].to_numpy(np.int64), index=seg["user_id"].astype(str))
                if table.index.has_duplicates:
                    raise SegrecError(f"{self.path}: segments.parquet lists a user twice; "
                                      "the artifact is corrupt")
                segments = table.reindex(model.user_vocab_.ids).fillna(-1).to_numpy(np.int64)
            # answers name the tier as the run does (local_ease, not the class's per_segment)
            model = SegmentedRecommender.serving(model, segments=segments, segmenter=self.segmenter(),
                                                 name=served)
        titles, items = None, self.items()
        if items is not None and "title" in items:
            titles = items.set_index(items["item_id"].astype(str))["title"]
            if titles.index.has_duplicates:
                raise SegrecError(f"{self.path}: items.parquet lists an item twice; the artifact is corrupt")
            titles = titles.reindex(model.item_vocab_.ids).to_numpy(dtype=object)
        info = {"path": str(self.path), "system": served,
                "data_fingerprint": self.manifest.get("data_fingerprint"),
                "created_at": self.manifest.get("created_at"),
                "policy": model.config.policy.kind if composite else None}
        from .route._ann import ANN_MIN_ITEMS

        return Router(model, titles=titles, info=info, ann=ann,
                      ann_min_items=ANN_MIN_ITEMS if ann_min_items is None else ann_min_items)


def load_run(path: str | Path, *, verify: bool = True) -> LoadedRun:
    """Open an artifact directory written by :func:`save_run`.

    The directory is untrusted input: see :func:`verify_run` for what is checked.

    Args:
        path: The run directory.
        verify: Check every file against the manifest first (reads stay confined to
            the directory either way).

    Raises:
        SegrecError: Not a run directory, or its manifest or a file is missing, corrupt
            or points outside the directory.
    """
    path = Path(path)
    if len(str(path)) > 4096:
        raise SegrecError(f"{str(path)[:60]}...: path of {len(str(path))} characters is too long")
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
        raise SegrecError(f"{str(path)[:200]}: not a usable path ({exc})") from exc
    if not is_dir:
        raise SegrecError(f"{path}: not a directory; pass the --out directory of `segrec run`")
    if not (path / MANIFEST).is_file() or (path / MANIFEST).is_symlink():
        raise SegrecError(f"{path}: has no {MANIFEST}; pass the --out directory of `segrec run`")
    with confined_reads(path, {MANIFEST}):
        manifest = read_json(path / MANIFEST)
    if isinstance(manifest, dict) and manifest.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise SegrecError(f"{path}: a run directory of format {str(manifest.get('format_version'))[:20]}; "
                          f"this segrec reads format {FORMAT_VERSION}: run `segrec run` again to refresh it")
    files = verify_run(path, manifest) if verify else None
    with confined_reads(path, files):
        results = read_json(path / "results.json")
    if not isinstance(results, dict):
        raise SegrecError(f"{path}: results.json is not a JSON object; the artifact is corrupt")
    return LoadedRun(path, manifest, results, files)


@dataclass(frozen=True)
class RunUpdate:
    """What :func:`update_run` did: events applied, users whose vectors were recomputed, where it wrote."""

    path: Path
    events: int
    users: int
    systems: list[str]


def update_run(path: str | Path, events: str | Path, *, out: str | Path | None = None,
               schema: Any = None) -> RunUpdate:
    """Append new interactions of known users to a saved run; recompute what a request reads from them.

    Every saved system gets the events through :meth:`Recommender.add_interactions`: the
    users' seen items (excluded), the Transformer's sequences, the item-item rows, and the
    cached vectors of exactly these users (the Transformer's hidden state after their new
    last item; ALS folded in). Nothing is relearned: weights, segments and routing stay
    as fitted, and ``results.json`` keeps the fit's evaluation (refit with ``segrec run``
    to relearn). The new run is written atomically (to ``out``, default in place: the
    old run stays complete until the new one is), with a fresh manifest that records
    the update; a running server picks it up on SIGHUP or ``POST /v1/admin/reload``.

    Args:
        path: The run directory (verified against its manifest first).
        events: Interactions file (``user_id,item_id[,timestamp]``, as ``segrec run`` reads),
            validated like any input; rows are applied in (user, time) order.
        out: Where to write the updated run (default: ``path``).
        schema: Column mapping of the events file (:class:`segrec.data.schema.Schema`).

    Raises:
        DataValidationError: The events file is malformed, or names a user or item the run
            does not know (new users are served from their recent items; new items need a refit).
    """
    import shutil
    import time as _time

    from . import route  # noqa: F401 - registers the composite's model class for loading
    from .data import load_interactions
    from .errors import DataValidationError
    path = Path(path)
    run = load_run(path)
    target = Path(out) if out is not None else path
    if target != path:
        check_out(target, overwrite=True, flag="--out")
    data = load_interactions(events, schema=schema)
    user_col = schema.user if schema is not None else "user_id"
    item_col = schema.item if schema is not None else "item_id"
    systems = {name: run.system(name) for name in run.system_names}
    first = next(iter(systems.values()))
    users = first.user_vocab_.index(data.user_vocab.ids[data.users])
    items = first.item_vocab_.index(data.item_vocab.ids[data.items])
    for ids, idx, column, what in ((data.user_vocab.ids[data.users], users, user_col,
                                    "user; new users are served from their recent_items at request time, "
                                    "or refit with `segrec run`"),
                                   (data.item_vocab.ids[data.items], items, item_col,
                                    "item; a new item needs a refit (segrec run)")):
        if (idx < 0).any():
            bad = str(ids[np.flatnonzero(idx < 0)[0]])
            line = _line_of(events, column, bad)
            at = f" (line {line})" if line else ""
            raise DataValidationError(f"{events}: column {column}{at}: {bad!r} is not a known {what}",
                                      source=str(events), column=column, problem="unknown id")
    for model in systems.values():
        if model.user_vocab_ != first.user_vocab_ or model.item_vocab_ != first.item_vocab_:
            raise SegrecError(f"{path}: its systems index users or items differently; refit the run")
    for model in systems.values():
        model.add_interactions(users, items)
        model.prepare_serving()  # every cached vector is in the artifact, the touched ones recomputed
    listed = sorted(run.files - {MANIFEST}) if run.files is not None else []
    with atomic_dir(target, discard=_discard_previous_run) as tmp:
        for rel in listed:
            if rel.startswith("systems/"):
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / rel, dest)  # verified by load_run; copied as bytes
        (tmp / "systems").mkdir()
        for name, model in systems.items():
            (tmp / "systems" / name).mkdir()
            model.save_into(tmp / "systems" / name)
        manifest = dict(run.manifest)
        manifest["updates"] = [*list(manifest.get("updates") or []), {
            "at": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()), "events": int(len(data)),
            "users": int(len(np.unique(users))), "source": str(events), "fingerprint": data.fingerprint()}]
        manifest["files"] = _file_table(tmp)
        write_json(tmp / MANIFEST, manifest)
    return RunUpdate(target, int(len(data)), int(len(np.unique(users))), list(systems))


def _line_of(source: Any, column: str, value: str) -> int | None:
    """The first line of a CSV file where ``column`` holds ``value`` (best effort, for messages)."""
    try:
        table = pd.read_csv(source, usecols=[column], dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - Parquet, a renamed column...: the message goes without a line
        return None
    hits = np.flatnonzero(table[column].str.strip().to_numpy() == value)
    return int(hits[0]) + 2 if len(hits) else None  # line 1 is the header
