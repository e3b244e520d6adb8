"""Run artifacts: save a finished run, verify its checksums, load it back for serving.

A run directory holds ``results.json``, ``manifest.json`` (versions, data
fingerprint, sha256 of every file), ``segments.parquet``, ``systems/<name>/`` (the
``segmented`` composite is one artifact with its tiers and segmenter inside),
``items.parquet``, ``segmenter/`` (the run's fitted segmentation pipeline, which
places new users for every saved system) and the HTML report. Everything is written
atomically (:func:`segrec.io.atomic_dir`) and nothing is pickled. The server and
``segrec recommend`` import only this module (and what it loads), never the
experiment runner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import SegrecError
from .io import atomic_dir, read_json, read_table, write_json, write_table
from .models import Recommender

if TYPE_CHECKING:  # the experiment runner is not imported by loading (serve, recommend)
    from .experiment import RunResult

__all__ = ["MANIFEST", "LoadedRun", "load_run", "save_run", "verify_run"]

log = logging.getLogger(__name__)


def save_run(result: RunResult, out: str | Path) -> Path:
    """Write the run's artifacts to ``out`` atomically, with a checksummed manifest.

    Layout: ``results.json``, ``manifest.json``, ``segments.parquet`` (user_id,
    segment), ``systems/<name>/`` (one saved Recommender each), ``items.parquet``
    (titles for serving, when the data has them), ``segmenter/`` (the fitted
    segmentation pipeline that places new users), ``report.json`` + ``report.html`` (the self-contained
    HTML report, :mod:`segrec.report`). ``manifest.json`` records versions, the resolved config,
    the data fingerprint, the headline metrics, analytic costs and the sha256 of
    every other file; :func:`load_run` verifies them. The time this takes is the
    run's ``save`` stage (up to ``results.json``, which records it).
    """
    from .experiment import results_dict

    out = Path(out)
    with atomic_dir(out) as tmp:
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


def verify_run(path: str | Path, manifest: dict[str, Any] | None = None) -> None:
    """Check every file of a run directory against the manifest's sha256 checksums.

    Raises:
        SegrecError: A listed file is missing, has another size or checksum
            (the message names the file and both digests).
    """
    import warnings

    from . import __version__
    from .errors import SegrecWarning

    path = Path(path)
    manifest = manifest if manifest is not None else read_json(path / MANIFEST)
    files = manifest.get("files")
    if files is None:
        warnings.warn(f"{path}: the manifest has no checksums (written before segrec 0.1 issue 5); "
                      "files are not verified. Re-save the run to add them.", SegrecWarning, stacklevel=3)
        return
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise SegrecError(f"{path}: file {rel} listed in {MANIFEST} is missing; "
                              "the artifact is incomplete")
        if f.stat().st_size != want["bytes"]:
            raise SegrecError(f"{path}: {rel} has {f.stat().st_size} bytes, expected {want['bytes']} "
                              f"({MANIFEST}); the file was truncated or modified after saving")
        got = _sha256(f)
        if got != want["sha256"]:
            raise SegrecError(f"{path}: checksum mismatch for {rel}: expected sha256 "
                              f"{want['sha256'][:16]}..., found {got[:16]}...; "
                              "the file was modified after saving")
    extra = sorted(set(_listed(path)) - set(files))
    if extra:
        warnings.warn(f"{path}: files not in the manifest are ignored: {extra[:5]}", SegrecWarning,
                      stacklevel=3)
    saved = manifest.get("segrec_version")
    if saved and saved != __version__:
        warnings.warn(f"{path}: written by segrec {saved}, loading with {__version__}; results may differ",
                      SegrecWarning, stacklevel=3)


def _listed(path: Path) -> list[str]:
    return [f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file() and f.name != MANIFEST]


@dataclass
class LoadedRun:
    """Saved systems and results read back by :func:`load_run`."""

    path: Path
    manifest: dict[str, Any]
    results: dict[str, Any]

    @property
    def system_names(self) -> list[str]:
        """Names of the saved systems."""
        return list(self.manifest["systems"])

    def system(self, name: str | None = None) -> Recommender:
        """Load one saved system (default: the run's best on inner validation, ``best_system``)."""
        name = name or self.manifest.get("best_system")
        if name not in self.manifest["systems"]:
            raise SegrecError(f"{self.path}: no system {name!r}; saved: {', '.join(self.system_names)}")
        return Recommender.load(self.path / "systems" / name)

    def segments(self) -> pd.DataFrame:
        """The saved user -> segment table."""
        return read_table(self.path / "segments.parquet")

    def items(self) -> pd.DataFrame | None:
        """The saved items table (``item_id``, ``title``, ...), or None."""
        f = self.path / "items.parquet"
        return read_table(f) if f.exists() else None

    def segmenter(self):
        """The run's fitted segmentation pipeline (places new users), or None."""
        from .segment import SegmentationPipeline

        directory = self.path / "segmenter"
        return SegmentationPipeline.load(directory) if directory.is_dir() else None

    def router(self, system: str | None = None, **routing: Any):
        """A :class:`~segrec.route.router.Router` serving one saved system.

        Args:
            system: System to serve; default the run's ``best_system`` (the best on inner
                validation), or ``segmented`` when a routing policy is given.
                A plain system is served as a one-tier composite with the run's segments
                and segmenter.
            **routing: Policy changes for a segmented system, e.g. ``policy="budget",
                budget_fraction=0.3`` (re-routed from the saved validation table, no refit).
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
                segments = table.reindex(model.user_vocab_.ids).fillna(-1).to_numpy(np.int64)
            model = SegmentedRecommender.serving(model, segments=segments, segmenter=self.segmenter())
        titles, items = None, self.items()
        if items is not None and "title" in items:
            titles = items.set_index(items["item_id"].astype(str))["title"].reindex(model.item_vocab_.ids)
            titles = titles.to_numpy(dtype=object)
        info = {"path": str(self.path), "system": served,
                "data_fingerprint": self.manifest.get("data_fingerprint"),
                "created_at": self.manifest.get("created_at"),
                "policy": model.config.policy.kind if composite else None}
        return Router(model, titles=titles, info=info)


def load_run(path: str | Path, *, verify: bool = True) -> LoadedRun:
    """Open an artifact directory written by :func:`save_run`.

    Args:
        path: The run directory.
        verify: Check every file against the manifest's checksums first.

    Raises:
        SegrecError: Not a run directory, or a file is missing or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        raise SegrecError(f"{path}: not a directory; pass the --out directory of `segrec run`")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise SegrecError(f"{path}: a run directory of format {manifest.get('format_version')}; this segrec "
                          f"reads format {FORMAT_VERSION}: run `segrec run` again to refresh it")
    if verify:
        verify_run(path, manifest)
    return LoadedRun(path, manifest, read_json(path / "results.json"))
