"""Leaf recommenders: baselines, the global Transformer, segment adapters, per-segment local models.

The segment-aware composite that routes among them is :class:`segrec.route.SegmentedRecommender`.
"""

from .adapters import AdaptedTransformerRecommender
from .base import ModelConfig, Recommender, check_is_fitted, model_class, registered_models
from .baselines import EASERecommender, ItemKNNRecommender, PopularityRecommender
from .context import FitContext
from .local import ItemSubsetRecommender, PerSegmentRecommender
from .mf import ALSRecommender
from .multvae import MultVAERecommender
from .tags import RecommenderTags, get_tags
from .transformer import TransformerRecommender

#: Saved class name -> class, for every Recommender defined so far (a live, read-only view:
#: classes register themselves by their ``name``; ``Recommender.load`` dispatches through it).
MODELS = registered_models()

__all__ = [
    "ALSRecommender",
    "AdaptedTransformerRecommender",
    "EASERecommender",
    "FitContext",
    "ItemKNNRecommender",
    "ItemSubsetRecommender",
    "MODELS",
    "ModelConfig",
    "MultVAERecommender",
    "PerSegmentRecommender",
    "PopularityRecommender",
    "Recommender",
    "RecommenderTags",
    "TransformerRecommender",
    "check_is_fitted",
    "get_tags",
    "model_class",
    "registered_models",
]
