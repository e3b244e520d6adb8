"""Saving a finished run: where it may go, writing it atomically, replacing a previous run."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import SegrecError
from ..io import atomic_dir, check_replaceable, read_json, write_json, write_table
from ._manifest import MANIFEST, _costs, _manifest, _plain_relative, _walk_files

if TYPE_CHECKING:  # the experiment runner is not imported by loading (serve, recommend)
    from ..experiment import RunResult

log = logging.getLogger("segrec.artifacts")  # the package's logger, as before the split


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
    from ..experiment import results_dict

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
    from ..report import REPORT_DATA, REPORT_HTML, build_report_data, write_report

    try:
        payload = build_report_data(result, costs=costs)
        write_json(directory / REPORT_DATA, payload)
        write_report(payload, directory / REPORT_HTML)
    except Exception as exc:
        log.warning("no HTML report: %s", exc, exc_info=True)
