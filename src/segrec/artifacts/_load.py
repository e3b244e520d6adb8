"""Loading a saved run back for serving: verified, with every read confined to the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SegrecError
from ..io import confined_reads, read_json, read_table
from ..models import Recommender
from ._manifest import FORMAT_VERSION, MANIFEST, verify_run


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
        from ..models._checks import loading
        from ..segment import SegmentationPipeline

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
        from ..route import Router, SegmentedRecommender

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
        from ..route._ann import ANN_MIN_ITEMS

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
