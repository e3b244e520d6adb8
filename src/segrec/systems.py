"""The system registry: every system ``segrec run`` can fit, by name, built from the run config.

One explicit dict (no string imports). Each system's ``[models.<table>]`` table is
validated against that model's own pydantic config before any data is read, and
layered over the run's defaults (seed, device) and the named preset. The
segment-aware composite that holds them all is built by :func:`build_composite`;
its fit (segment, fit the members in order, route) is the composite's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .config import RunConfig, first_error
from .errors import ConfigError, SegrecError
from .models import (
    AdaptedTransformerRecommender,
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    JointTransformerRecommender,
    MultVAERecommender,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
    TransformerRecommender,
)
from .route import FallbackChain, RoutingPolicy, SegmentedRecommender

__all__ = ["PRESETS", "SYSTEMS", "SystemSpec", "build_composite", "build_system", "check_model_tables",
           "known_systems", "preset_in_use"]

#: Named settings layered under the ``[models.*]`` tables. ``demo``: a lighter Transformer and
#: adapters for the built-in synthetic data, so the demo ``segrec run`` stays short on 2 CPU cores.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {
        "transformer": {"max_len": 50, "epochs": 15, "patience": 3, "target_window": 1,
                        "exclude_seen": False},
        "adapter": {"epochs": 8, "patience": 2},
        "joint": {"max_len": 50, "epochs": 15, "patience": 3, "target_window": 1, "exclude_seen": False},
    },
    "none": {},
}

@dataclass(frozen=True)
class SystemSpec:
    """How one system is built.

    Attributes:
        model: Its Recommender class (whose ``Config`` validates the table).
        tier: Its member name inside the composite (``global``, ``adapted``, ...).
        table: Its ``[models.<table>]`` name.
        defaults: Run-level settings it takes (seed, device), under the table.
        neural: A neural network: the large side of the composite's blends.
    """

    model: type[Recommender]
    tier: str
    table: str
    defaults: Callable[[RunConfig], dict[str, Any]] = field(default=lambda cfg: {})
    neural: bool = False


def _seeded(cfg: RunConfig) -> dict[str, Any]:
    return {"random_state": cfg.seed}


def _neural(cfg: RunConfig) -> dict[str, Any]:
    return {"random_state": cfg.seed, "device": cfg.device}


#: system name -> how to build it.
SYSTEMS: dict[str, SystemSpec] = {
    "popularity": SystemSpec(PopularityRecommender, "popularity", "popularity"),
    "itemknn": SystemSpec(ItemKNNRecommender, "itemknn", "itemknn"),
    "ease": SystemSpec(EASERecommender, "ease", "ease"),
    "als": SystemSpec(ALSRecommender, "als", "als", _seeded),
    "multvae": SystemSpec(MultVAERecommender, "multvae", "multvae",
                          lambda cfg: {**_seeded(cfg), **({"device": cfg.device} if "device" in
                                                          MultVAERecommender.Config.model_fields else {})},
                          neural=True),
    "transformer": SystemSpec(TransformerRecommender, "global", "transformer", _neural, neural=True),
    "adapted_transformer": SystemSpec(AdaptedTransformerRecommender, "adapted", "adapter", _neural,
                                      neural=True),
    # opt-in (not in the default ``systems``): θ_shared and θ_k trained together (issue 17)
    "joint_transformer": SystemSpec(JointTransformerRecommender, "joint", "joint", _neural, neural=True),
    "local_ease": SystemSpec(PerSegmentRecommender, "local", "local_ease",
                             lambda cfg: {"base": "ease", "min_segment_users": cfg.models.min_segment_users}),
}
#: the composite's table: ``[models.segmented]`` (policy, fallback, candidates)
COMPOSITE_TABLE = "segmented"


def known_systems() -> list[str]:
    """Every name ``--systems`` accepts."""
    return sorted([*SYSTEMS, "segmented"])


def preset_in_use(cfg: RunConfig) -> str:
    """The preset the run applies: the configured one, ``auto`` resolved by the data source."""
    if cfg.models.preset != "auto":
        return cfg.models.preset
    return "demo" if cfg.data.path is None else "none"


def _settings(name: str, cfg: RunConfig) -> dict[str, Any]:
    spec = SYSTEMS[name]
    preset = PRESETS[preset_in_use(cfg)].get(spec.table, {})
    return {**spec.defaults(cfg), **preset, **cfg.models.table(spec.table)}


def _validated(cls: type, table: str, values: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        key, problem = first_error(exc)
        raise ConfigError(f"[models.{table}] {key}: {problem}", key=f"models.{table}.{key}") from None


def check_model_tables(cfg: RunConfig) -> None:
    """Validate every ``[models.*]`` table against its model's config (before any data is read).

    Raises:
        ConfigError: An unknown system or table name, or a wrong key or type, in one line
            naming it, e.g. ``[models.transformer] epochs: Input should be a valid integer``.
    """
    unknown = [n for n in cfg.models.systems if n not in SYSTEMS and n != "segmented"]
    if unknown:
        raise SegrecError(f"unknown system {unknown[0]!r}; known: {known_systems()}")
    tables = {spec.table: name for name, spec in SYSTEMS.items()}
    for table in cfg.models.tables():
        if table not in tables and table != COMPOSITE_TABLE:
            raise ConfigError(f"[models.{table}]: no such system table; known: "
                              f"{sorted([*tables, COMPOSITE_TABLE])}", key=f"models.{table}")
    for name, spec in SYSTEMS.items():
        _validated(spec.model.Config, spec.table, _settings(name, cfg))
    _validated(SegmentedRecommender.Config, COMPOSITE_TABLE, cfg.models.table(COMPOSITE_TABLE))


def build_system(name: str, cfg: RunConfig, *, progress_bars: bool = False) -> Recommender:
    """An unfitted system by name (see :data:`SYSTEMS`; ``segmented`` is :func:`build_composite`).

    Args:
        name: The system.
        cfg: The run config (seed, device, preset and its ``[models.*]`` table).
        progress_bars: Per-epoch bars for models that train in epochs, unless the table
            sets ``show_progress`` itself (a long fit should not look hung).
    """
    if name not in SYSTEMS:
        raise SegrecError(f"unknown system {name!r}; known: {known_systems()}")
    spec = SYSTEMS[name]
    values = _settings(name, cfg)
    fields = spec.model.Config.model_fields
    if progress_bars and "show_progress" in fields and "show_progress" not in cfg.models.table(spec.table):
        values["show_progress"] = True
    return spec.model(_validated(spec.model.Config, spec.table, values))


def member_names(systems: list[str]) -> dict[str, str]:
    """System -> its member name in the composite; EASE is the large tier when there is no Transformer."""
    out = {name: SYSTEMS[name].tier for name in systems}
    if "transformer" not in systems and "ease" in systems:
        out["ease"] = "global"
    return out


def build_composite(cfg: RunConfig, systems: list[str],
                    members: dict[str, Recommender]) -> SegmentedRecommender:
    """The composite ``segrec run`` fits: the run's segmenter, every built system as a member.

    Args:
        cfg: The run config (segmentation settings, ``[models.segmented]``).
        systems: The configured systems (``segmented`` included when it is to be routed).
        members: member name -> unfitted model, from :func:`build_system` via :func:`member_names`.

    Returns:
        A SegmentedRecommender whose routing chooses among every member (and, per
        segment, blends of the best neural member with the best other one). When
        ``segmented`` is not asked for it still measures every member on inner
        validation (no blends), so the run's served system is chosen there, not on test.
    """
    from .segment import SegmentationPipeline

    s = cfg.segmentation
    segmenter = SegmentationPipeline.build(s.method, n_segments=s.n_segments, random_state=cfg.seed,
                                           text=s.text, cache_dir=s.embedding_cache)
    members = dict(members)
    routed = "segmented" in systems
    if routed:  # the large tier and the last resort exist even when not compared on their own
        if "global" not in members:
            members["global"] = build_system("ease", cfg)
        members.setdefault("popularity", PopularityRecommender())
    neural = {SYSTEMS[n].tier for n in SYSTEMS if SYSTEMS[n].neural}
    defaults = {"large_tiers": tuple(m for m in members if m in neural)}
    settings = cfg.models.table(COMPOSITE_TABLE)
    config = _validated(SegmentedRecommender.Config, COMPOSITE_TABLE, {**defaults, **settings})
    if not routed:
        default = "global" if "global" in members else next(iter(members))
        config = config.model_copy(update={"policy": RoutingPolicy(default_tier=default), "blend": False,
                                           "fallback": FallbackChain((default,)).order})
    return SegmentedRecommender(segmenter, members, config=config)
