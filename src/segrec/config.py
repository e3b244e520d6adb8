"""Typed run configuration: one TOML file (or defaults) -> :class:`RunConfig`.

Only the CLI reads files; the library receives a validated ``RunConfig``.
Sections: ``[data] [split] [segmentation] [models] [evaluate] [ray]``.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

__all__ = ["METHODS", "RunConfig", "first_error", "load_config"]

#: segmentation methods (``segrec.segment.api.METHODS``, kept here so reading a config
#: imports no scikit-learn; tests/unit/test_config.py checks the two agree)
METHODS = ("kmeans", "spectral", "agglomerative", "gmm", "vae", "tiers", "auto")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnsConfig(_Section):
    """Which columns of the interactions file hold what (``[data.columns]``; CLI ``--user-col`` ...).

    Unset names keep the defaults ``user_id``, ``item_id``, ``rating``, ``timestamp``;
    a rating or time column named here must exist in the file.
    """

    user: str | None = Field(None, min_length=1)
    """Column of user ids."""
    item: str | None = Field(None, min_length=1)
    """Column of item ids."""
    timestamp: str | None = Field(None, min_length=1)
    """Column of times (epoch seconds or ISO-8601)."""
    rating: str | None = Field(None, min_length=1)
    """Column of ratings / weights."""


class DataConfig(_Section):
    """Where the interactions come from; no path means the built-in synthetic data."""

    path: str | None = Field(None, min_length=1)
    """Interactions file (CSV, Parquet, MovieLens formats)."""
    items: str | None = Field(None, min_length=1)
    """Optional items table (item_id, title, categories, ...)."""
    users: str | None = Field(None, min_length=1)
    """Optional users table (user_id, attributes...)."""
    columns: ColumnsConfig = ColumnsConfig()
    """Column names of the interactions file, when they are not the defaults."""
    encoding: str = "utf-8"
    """Text encoding of the interactions file (e.g. ``latin-1``)."""
    synthetic_users: int = Field(1000, ge=10)
    """Users of the built-in synthetic data."""
    synthetic_items: int = Field(500, ge=10)
    """Items of the built-in synthetic data."""
    synthetic_segments: int = Field(4, ge=1)
    """Planted segments of the built-in synthetic data."""

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; e.g. utf-8, latin-1, utf-16") from None
        return value

    def schema_fields(self) -> dict[str, str]:
        """The loader's :class:`~segrec.data.schema.Schema` fields these settings change (empty: defaults).

        A dict, not a Schema: the config is the lowest layer and imports nothing from ``data``.
        """
        names = {"user": self.columns.user, "item": self.columns.item,
                 "timestamp": self.columns.timestamp, "rating": self.columns.rating}
        given = {k: v for k, v in names.items() if v is not None}
        if self.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            given["encoding"] = self.encoding
        return given


class SplitConfig(_Section):
    """The protocol's per-user temporal split."""

    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / valid / test shares (EVAL_PROTOCOL.md), each > 0, summing to 1."""
    no_split: bool = False
    """Use all data as fit data and hold nothing out (nothing is evaluated)."""

    @field_validator("ratios")
    @classmethod
    def _shares(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(r) and 0 < r < 1 for r in value):
            raise ValueError("each share must be between 0 and 1 (exclusive), e.g. [0.8, 0.1, 0.1]; "
                             "to evaluate nowhere, set no_split = true instead")
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"the shares must sum to 1; these sum to {sum(value):g}")
        return value


class SegmentationConfig(_Section):
    """How users are segmented (issue 3)."""

    method: str = "kmeans"
    """kmeans, spectral, agglomerative, gmm, vae, tiers or auto."""
    n_segments: int | Literal["auto"] = "auto"
    """Number of segments (>= 1), or ``auto`` to choose it."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; use one of {', '.join(METHODS)}")
        return value

    @field_validator("n_segments", mode="before")
    @classmethod
    def _k(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be a whole number >= 1 or \"auto\"; got {value!r}")
        return value
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

    @field_validator("systems")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("list at least one system (see `segrec run --help` for the names)")
        if len(set(value)) != len(value):
            raise ValueError(f"a system is listed twice: {list(value)}")
        return value


class EvaluateConfig(_Section):
    """Evaluation settings (EVAL_PROTOCOL.md)."""

    ks: tuple[int, ...] = (10, 20)
    """Cut-offs; must include 10 and 20, which the comparison tables report."""
    n_boot: int = Field(2000, ge=100, le=1_000_000)
    """Bootstrap resamples for the confidence intervals."""

    @field_validator("ks")
    @classmethod
    def _cutoffs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [k for k in value if not 1 <= k <= 10_000]
        if bad:
            raise ValueError(f"every cut-off must be a whole number from 1 to 10000; got {bad[0]}")
        if not {10, 20} <= set(value):
            raise ValueError(f"must include 10 and 20 (the comparison tables report them); got {list(value)}")
        return tuple(sorted(set(value)))


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

    seed: int = Field(0, ge=0, lt=2**32)
    """Seed for every random choice in the run."""
    device: str = "cpu"
    """Torch device for the neural models (``cpu``, ``cuda`` or ``cuda:N``)."""
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    models: ModelsConfig = ModelsConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    ray: RayConfig = RayConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d{1,2})?|mps", value):
            raise ValueError(f"unknown device {value!r}; use cpu, cuda or cuda:N")
        return value


def load_config(path: str | Path | None = None, *, flags: dict[str, str] | None = None,
                **overrides: Any) -> RunConfig:
    """Read a TOML run config (or the defaults) and apply section overrides.

    Args:
        path: TOML file, or None for the defaults.
        flags: Dotted config key -> the CLI flag that set it (e.g. ``{"segmentation.n_segments":
            "--segments"}``), so an error in a value the user typed names the flag.
        **overrides: Top-level keys or whole sections, e.g. ``data={"path": "x.csv"}``;
            a section given here is merged into the file's section.

    Raises:
        ConfigError: The file is missing, is not UTF-8 TOML, or a value is invalid
            (the message names the file and the dotted key, or the flag).
    """
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path:
        try:
            text = Path(path).read_bytes().decode("utf-8")
            raw = tomllib.loads(text)
        except FileNotFoundError as exc:
            raise ConfigError(f"--config {path}: config file not found", path=str(path)) from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"--config {path}: is a directory; pass a TOML file", path=str(path)) from exc
        except OSError as exc:
            raise ConfigError(f"--config {path}: cannot be read ({exc.strerror})", path=str(path)) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a TOML text file, "
                              "see segrec.example.toml", path=str(path)) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})", path=str(path)) from exc
        except RecursionError as exc:
            raise ConfigError(f"{path}: nested too deeply to be a segrec config", path=str(path)) from exc
    for key, value in overrides.items():
        if isinstance(value, dict):
            section = raw.get(key, {})
            raw[key] = {**(section if isinstance(section, dict) else {}), **_merge(section, value)}
        else:
            raw[key] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        # name the flag only when the flag set the value (the same key may come from the file)
        flag = (flags or {}).get(key) if key in _dotted(overrides) else None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(loc)
        elif "input" in err and not msg.startswith(("must", "unknown", "each", "the shares")):
            msg += f" (got {_short(err['input'])})"
        if flag:
            raise ConfigError(f"{flag}: {msg}", path=source, key=key) from None
        raise ConfigError(f"{source}: {key}: {msg}", path=source, key=key) from None


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The dotted key of a pydantic error's first problem, and the problem with the value given."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]), f"{err['msg']} (got {err.get('input')!r})"


def _dotted(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Every dotted key path of a nested dict (``{"a": {"b": 1}}`` -> ``{"a", "a.b"}``)."""
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _dotted(v, prefix + k + ".")
    return out


def _merge(section: Any, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with its sub-tables merged into those of ``section`` (``[data.columns]`` + flags)."""
    if not isinstance(section, dict):
        return value
    out = {}
    for k, v in value.items():
        old = section.get(k)
        out[k] = {**old, **v} if isinstance(v, dict) and isinstance(old, dict) else v
    return out


def _unknown_key(loc: list[str]) -> str:
    """'unknown key' with the keys that do exist there and the nearest one."""
    model: Any = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            model = None
            break
        model = annotation
    if model is None:
        return "unknown key"
    known = list(model.model_fields)
    where = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "the top level"
    near = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown key{hint}; keys of {where}: {', '.join(known)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
