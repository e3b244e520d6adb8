"""Typed run configuration: one TOML file (or defaults) -> :class:`RunConfig`.

Only the CLI reads files; the library receives a validated ``RunConfig``.
Sections: ``[data] [split] [segmentation] [models] [evaluate] [ray]``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

__all__ = ["RunConfig", "first_error", "load_config"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """Where the interactions come from; no path means the built-in synthetic data."""

    path: str | None = None
    """Interactions file (CSV, Parquet, MovieLens formats)."""
    items: str | None = None
    """Optional items table (item_id, title, categories, ...)."""
    users: str | None = None
    """Optional users table (user_id, attributes...)."""
    synthetic_users: int = Field(1000, ge=10)
    """Users of the built-in synthetic data."""
    synthetic_items: int = Field(500, ge=10)
    """Items of the built-in synthetic data."""
    synthetic_segments: int = Field(4, ge=1)
    """Planted segments of the built-in synthetic data."""


class SplitConfig(_Section):
    """The protocol's per-user temporal split."""

    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / valid / test shares (EVAL_PROTOCOL.md)."""
    no_split: bool = False
    """Use all data as fit data and hold nothing out (nothing is evaluated)."""


class SegmentationConfig(_Section):
    """How users are segmented (issue 3)."""

    method: str = "kmeans"
    """kmeans, spectral, agglomerative, gmm, vae, tiers or auto."""
    n_segments: int | Literal["auto"] = "auto"
    """Number of segments, or ``auto`` to choose it."""
    text: bool = True
    """Use item-text embeddings from the pretrained language model when installed."""
    embedding_cache: str | None = None
    """Directory caching item-text embeddings by content hash (None = no cache)."""


class ModelsConfig(_Section):
    """Which systems to fit and compare, and their settings.

    Every other key is one system's table, e.g. ``[models.transformer]`` or
    ``[models.adapter]`` (the adapted Transformer), holding overrides of that
    model's own config. The tables are checked against each model's config class
    by :func:`segrec.systems.check_model_tables` (this module does not import the
    models), before any data is read.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    systems: tuple[str, ...] = (
        "popularity", "itemknn", "ease", "als", "multvae",
        "transformer", "adapted_transformer", "local_ease", "segmented",
    )
    """Systems to fit; unknown or unavailable ones are reported and skipped."""
    min_segment_users: int = Field(20, ge=1)
    """Smallest segment that gets its own local model / adapter."""
    preset: Literal["auto", "demo", "none"] = "auto"
    """Named settings layered under the model tables: ``demo`` (a lighter Transformer and
    adapters so the demo run stays short on 2 CPU cores), ``none`` (the models' own
    defaults), or ``auto``: ``demo`` on the built-in synthetic data, ``none`` on ``--data``.
    The run prints the preset when it applies."""

    @model_validator(mode="after")
    def _tables_are_tables(self) -> ModelsConfig:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"[models.{key}] must be a table of settings; got {value!r}")
        return self

    def table(self, name: str) -> dict[str, Any]:
        """The ``[models.<name>]`` table (empty when the config has none)."""
        return dict((self.model_extra or {}).get(name) or {})

    def tables(self) -> dict[str, dict[str, Any]]:
        """Every ``[models.<name>]`` table by name."""
        return {k: dict(v) for k, v in (self.model_extra or {}).items()}


class EvaluateConfig(_Section):
    """Evaluation settings (EVAL_PROTOCOL.md)."""

    ks: tuple[int, ...] = (10, 20)
    """Cut-offs."""
    n_boot: int = Field(2000, ge=100)
    """Bootstrap resamples for the confidence intervals."""


class RayConfig(_Section):
    """Where per-segment work and the global Transformer run (issue 6, docs/ray.md)."""

    executor: Literal["local", "ray"] = "local"
    """``local``: everything in this process (Ray not needed). ``ray``: per-segment fits as
    Ray tasks and the global Transformer on Ray Train (extra ``ray``)."""
    address: str | None = None
    """Ray cluster to join (``auto``, ``ray://head:10001``, ``host:6379``); None starts a local Ray."""
    workers: int = Field(1, ge=1)
    """Ray Train workers (torch DDP processes) for the global Transformer."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs per Ray Train worker (also its torch threads)."""
    gpus_per_worker: float = Field(0.0, ge=0)
    """GPUs per Ray Train worker; > 0 trains on CUDA with nccl instead of gloo."""
    cpus_per_task: float = Field(1.0, gt=0)
    """CPUs Ray reserves per segment task."""
    gpus_per_task: float = Field(0.0, ge=0)
    """GPUs per segment task (fractions share one GPU; set the adapter's ``device`` to ``cuda``)."""
    max_retries: int = Field(1, ge=0)
    """Extra attempts for a segment task that fails or whose worker dies; a segment that
    still fails is served by the global model and reported in the results."""
    storage_path: str | None = None
    """Ray Train checkpoint storage, reachable from every node (NFS path or ``s3://``);
    None = a temporary local directory (enough for a single-node cluster)."""


class RunConfig(_Section):
    """Everything ``segrec run`` needs."""

    seed: int = 0
    """Seed for every random choice in the run."""
    device: str = "cpu"
    """Torch device for the neural models (``cpu`` or ``cuda``)."""
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    models: ModelsConfig = ModelsConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    ray: RayConfig = RayConfig()


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a TOML run config (or the defaults) and apply section overrides.

    Args:
        path: TOML file, or None for the defaults.
        **overrides: Top-level keys or whole sections, e.g. ``data={"path": "x.csv"}``;
            a section given here is merged into the file's section.

    Raises:
        ConfigError: The file is missing, is not TOML, or a value is invalid
            (the message names the file and the dotted key).
    """
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found", path=str(path)) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})", path=str(path)) from exc
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        key, problem = first_error(exc)
        raise ConfigError(f"{source}: {key}: {problem}", path=source, key=key) from exc


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The dotted key of a pydantic error's first problem, and the problem with the value given."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]), f"{err['msg']} (got {err.get('input')!r})"
