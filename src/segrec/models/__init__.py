"""Recommenders: baselines, the global Transformer, segment adapters, local models."""

from .adapters import AdaptedTransformerRecommender
from .base import ModelConfig, Recommender, check_is_fitted
from .baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender
from .local import ItemSubsetRecommender, PerSegmentRecommender
from .mf import ALSRecommender
from .multvae import MultVAERecommender
from .segmented import SegmentedRecommender
from .transformer import TransformerRecommender

#: Saved class name -> class; ``Recommender.load`` dispatches through this dict.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender,
        ItemKNNRecommender,
        EASERecommender,
        ALSRecommender,
        MultVAERecommender,
        PerSegmentRecommender,
        ItemSubsetRecommender,
        SegmentedRecommender,
        TransformerRecommender,
        AdaptedTransformerRecommender,
    )
}

__all__ = [
    "ALSRecommender",
    "AdaptedTransformerRecommender",
    "EASERecommender",
    "ItemKNNRecommender",
    "ItemSubsetRecommender",
    "MODELS",
    "ModelConfig",
    "MultVAERecommender",
    "PerSegmentRecommender",
    "PopularityRecommender",
    "Recommender",
    "SegmentedRecommender",
    "TransformerRecommender",
    "check_is_fitted",
]
