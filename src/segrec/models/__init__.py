"""Recommenders: baselines, the global Transformer, segment adapters, local models."""

from .base import ModelConfig, Recommender, check_is_fitted
from .baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender

#: Saved class name -> class; ``Recommender.load`` dispatches through this dict.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (PopularityRecommender, ItemKNNRecommender, EASERecommender)
}

__all__ = [
    "EASERecommender",
    "ItemKNNRecommender",
    "MODELS",
    "ModelConfig",
    "PopularityRecommender",
    "Recommender",
    "check_is_fitted",
]
