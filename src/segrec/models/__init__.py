"""Recommenders: baselines, the global Transformer, segment adapters, local models."""

from .adapters import AdaptedTransformerRecommender
from .base import ModelConfig, Recommender, check_is_fitted
from .baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender
from .local import PerSegmentRecommender
from .segmented import SegmentedRecommender
from .transformer import TransformerRecommender

#: Saved class name -> class; ``Recommender.load`` dispatches through this dict.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender,
        ItemKNNRecommender,
        EASERecommender,
        PerSegmentRecommender,
        SegmentedRecommender,
        TransformerRecommender,
        AdaptedTransformerRecommender,
    )
}

__all__ = [
    "AdaptedTransformerRecommender",
    "EASERecommender",
    "ItemKNNRecommender",
    "MODELS",
    "ModelConfig",
    "PerSegmentRecommender",
    "PopularityRecommender",
    "Recommender",
    "SegmentedRecommender",
    "TransformerRecommender",
    "check_is_fitted",
]
