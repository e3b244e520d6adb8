"""The system registry: every system ``segrec run`` can fit, by name, built from the run config.

One explicit dict (no string imports). ``segmented`` is not here: it is the
composite the run builds from the fitted systems (:mod:`segrec.experiment`).
"""

from __future__ import annotations

from collections.abc import Callable

from .config import RunConfig
from .errors import SegrecError
from .models import (
    EASERecommender,
    ItemKNNRecommender,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
)

__all__ = ["DEMO_ADAPTER", "DEMO_TRANSFORMER", "SYSTEMS", "TIERS", "build_system", "known_systems"]

#: Lighter Transformer / adapter settings for the built-in synthetic data only, so the
#: demo `segrec run` stays short on 2 CPU cores. Real data (--data) gets the models'
#: own defaults; explicit [models.transformer] / [models.adapter] keys win.
DEMO_TRANSFORMER = {"max_len": 50, "epochs": 15, "patience": 3, "target_window": 1, "exclude_seen": False}
DEMO_ADAPTER = {"epochs": 8, "patience": 2}


def _transformer(cfg: RunConfig) -> Recommender:
    from .models.transformer import TransformerRecommender

    demo = DEMO_TRANSFORMER if cfg.data.path is None else {}
    return TransformerRecommender(**{"random_state": cfg.seed, "device": cfg.device, **demo,
                                     **cfg.models.transformer})


def _adapted(cfg: RunConfig) -> Recommender:
    from .models.adapters import AdaptedTransformerRecommender

    demo = DEMO_ADAPTER if cfg.data.path is None else {}
    return AdaptedTransformerRecommender(**{"random_state": cfg.seed, "device": cfg.device, **demo,
                                            **cfg.models.adapter})


def _als(cfg: RunConfig) -> Recommender:
    from .models.mf import ALSRecommender

    return ALSRecommender(random_state=cfg.seed)


def _multvae(cfg: RunConfig) -> Recommender:
    from .models.multvae import MultVAERecommender

    extra = {"device": cfg.device} if "device" in MultVAERecommender.Config.model_fields else {}
    return MultVAERecommender(random_state=cfg.seed, **extra)


#: system name -> builder of the unfitted model.
SYSTEMS: dict[str, Callable[[RunConfig], Recommender]] = {
    "popularity": lambda cfg: PopularityRecommender(),
    "itemknn": lambda cfg: ItemKNNRecommender(),
    "ease": lambda cfg: EASERecommender(),
    "als": _als,
    "multvae": _multvae,
    "transformer": _transformer,
    "adapted_transformer": _adapted,
    "local_ease": lambda cfg: PerSegmentRecommender(
        base="ease", min_segment_users=cfg.models.min_segment_users),
}

#: tier name inside the segmented system -> the system that provides it.
TIERS = {"adapted": "adapted_transformer", "global": "transformer", "local": "local_ease",
         "popularity": "popularity"}


def known_systems() -> list[str]:
    """Every name ``--systems`` accepts."""
    return sorted([*SYSTEMS, "segmented"])


def build_system(name: str, cfg: RunConfig) -> Recommender:
    """An unfitted system by name (see :data:`SYSTEMS`; ``segmented`` is built by the run)."""
    if name not in SYSTEMS:
        raise SegrecError(f"unknown system {name!r}; known: {known_systems()}")
    return SYSTEMS[name](cfg)
