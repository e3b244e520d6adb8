"""The :class:`Segmentation` value: a segment per user, with what is needed to read and reuse it."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegmentationError, SegrecError
from ..features.base import UserFeatures
from ..io import atomic_dir, load_tensors, read_json, read_table, save_tensors, write_json, write_table
from ._arrays import _matrix, nearest_center

__all__ = ["Segmentation"]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A segment per user, with what is needed to read and reuse it.

    Attributes:
        labels: int64 array of shape (n_users,), segment per dense user of the
            features' vocabulary (``-1`` never occurs).
        n_segments: Number of segments (labels are ``0..n_segments-1``).
        method: Segmenter name (``kmeans``, ``gmm``, ...).
        centers: float32 (n_segments, n_features) in the feature space, or None.
        metrics: Quality figures (silhouette, davies_bouldin, calinski_harabasz,
            and stability / downstream figures when computed).
        names: Optional readable segment names (tiers), one per segment.
        user_ids: External user ids of the labelled rows, shape (n_users,).
        config: The segmenter's resolved config.
        extra: JSON-able extras (K-selection table, reassignment report, seconds).
    """

    labels: np.ndarray
    n_segments: int
    method: str
    centers: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    names: tuple[str, ...] | None = None
    user_ids: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def sizes(self) -> np.ndarray:
        """Users per segment, int64 array of shape (n_segments,)."""
        return np.bincount(self.labels, minlength=self.n_segments)

    def segment_name(self, s: int) -> str:
        """Readable name of segment ``s`` (its tier name, or ``"segment s"``)."""
        return self.names[s] if self.names else f"segment {s}"

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: method, K, sizes, metrics, names and extras."""
        return {
            "method": self.method,
            "n_segments": int(self.n_segments),
            "sizes": self.sizes().tolist(),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "names": list(self.names) if self.names else None,
            **self.extra,
        }

    def assign(self, features: UserFeatures | np.ndarray) -> np.ndarray:
        """Nearest centre in the feature space (segmenter-free placement after ``load``).

        Raises:
            SegmentationError: The segmentation has no centres (e.g. tiers).
        """
        if self.centers is None:
            raise SegmentationError(f"{self.method} segmentation has no centres; assign with its segmenter")
        return nearest_center(_matrix(features), self.centers)

    def with_labels(
        self,
        labels: np.ndarray,
        *,
        method: str | None = None,
        centers: np.ndarray | None = None,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Segmentation:
        """A copy with new labels (e.g. after reassignment) and optionally new centres/metrics."""
        return Segmentation(
            np.asarray(labels, dtype=np.int64),
            self.n_segments,
            method or self.method,
            self.centers if centers is None else centers,
            dict(self.metrics if metrics is None else metrics),
            self.names,
            self.user_ids,
            self.config,
            {**self.extra, **(extra or {})},
        )

    # ------------------------------------------------------------ artifacts
    def save(self, path: str | Path) -> Path:
        """Write ``segmentation.json``, ``segmentation.safetensors`` and ``users.parquet`` atomically."""
        import pandas as pd

        from .. import __version__

        with atomic_dir(path) as tmp:
            tensors = {"labels": self.labels.astype(np.int64)}
            if self.centers is not None:
                tensors["centers"] = np.asarray(self.centers, dtype=np.float32)
            save_tensors(tmp / "segmentation.safetensors", tensors)
            if self.user_ids is not None:
                write_table(
                    tmp / "users.parquet", pd.DataFrame({"id": np.asarray(self.user_ids).astype(str)})
                )
            write_json(
                tmp / "segmentation.json",
                {
                    "method": self.method,
                    "n_segments": int(self.n_segments),
                    "metrics": self.metrics,
                    "names": list(self.names) if self.names else None,
                    "config": self.config,
                    "extra": self.extra,
                    "segrec_version": __version__,
                    "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
                },
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Segmentation:
        """Load what :meth:`save` wrote; never unpickles."""
        path = Path(path)
        info = read_json(path / "segmentation.json")
        tensors = load_tensors(path / "segmentation.safetensors")
        users = None
        if (path / "users.parquet").exists():
            users = read_table(path / "users.parquet")["id"].astype(str).to_numpy(dtype=object)
        labels = tensors["labels"].astype(np.int64)
        if users is not None and len(users) != len(labels):
            raise SegrecError(f"{path}: {len(labels)} labels but {len(users)} user ids")
        return cls(
            labels,
            int(info["n_segments"]),
            str(info["method"]),
            tensors.get("centers"),
            dict(info.get("metrics") or {}),
            tuple(info["names"]) if info.get("names") else None,
            users,
            dict(info.get("config") or {}),
            dict(info.get("extra") or {}),
        )
