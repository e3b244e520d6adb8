"""User features for segmentation, fitted on fit data only.

Four blocks — behaviour, demographics, a semantic text profile (item texts
embedded by all-MiniLM-L6-v2, offline) and collaborative SVD factors — are
combined by :class:`FeaturePipeline` into one :class:`UserFeatures` matrix,
each block standardised and weighted.

Example:
    >>> from segrec.features import FeaturePipeline, HashingEmbedder, NewUsers
    >>> pipe = FeaturePipeline(blocks=("behavior", "text", "svd"), weights={"text": 2.0},
    ...                        embedder=HashingEmbedder(64))
    >>> feats = pipe.fit_transform(split.fit)  # doctest: +SKIP
    >>> new = pipe.transform_new(NewUsers(["new-1"], histories=[["i3", "i9"]]))  # doctest: +SKIP
"""

from .base import FeatureBlock, NewUsers, UserFeatures
from .behavior import BehaviorConfig, BehaviorFeatures, behavior_stats, item_category_matrix
from .collaborative import CollaborativeConfig, CollaborativeFeatures
from .demographics import DemographicsConfig, DemographicsFeatures
from .pipeline import BLOCKS, FeaturePipeline, FeaturesConfig
from .text import (
    HashingEmbedder,
    SentenceTransformerEmbedder,
    TextEmbedder,
    TextProfileConfig,
    TextProfileFeatures,
    default_model_path,
    embed_cached,
    item_texts,
)

__all__ = [
    "BLOCKS",
    "BehaviorConfig",
    "BehaviorFeatures",
    "CollaborativeConfig",
    "CollaborativeFeatures",
    "DemographicsConfig",
    "DemographicsFeatures",
    "FeatureBlock",
    "FeaturePipeline",
    "FeaturesConfig",
    "HashingEmbedder",
    "NewUsers",
    "SentenceTransformerEmbedder",
    "TextEmbedder",
    "TextProfileConfig",
    "TextProfileFeatures",
    "UserFeatures",
    "behavior_stats",
    "default_model_path",
    "embed_cached",
    "item_category_matrix",
    "item_texts",
]
