"""Recommenders: baselines, the global Transformer, segment adapters, local models."""

from .base import ModelConfig, Recommender, check_is_fitted
from .baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender
from .local import PerSegmentRecommender
from .segmented import SegmentedRecommender

#: Saved class name -> class; ``Recommender.load`` dispatches through this dict.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender,
        ItemKNNRecommender,
        EASERecommender,
        PerSegmentRecommender,
        SegmentedRecommender,
    )
}

__all__ = [
    "EASERecommender",
    "ItemKNNRecommender",
    "MODELS",
    "ModelConfig",
    "PerSegmentRecommender",
    "PopularityRecommender",
    "Recommender",
    "SegmentedRecommender",
    "check_is_fitted",
]
