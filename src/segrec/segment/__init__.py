"""User segmentation: six segmenters, automatic K, profiles, and segments optimised for recommendation.

Example:
    >>> from segrec.features import FeaturePipeline, HashingEmbedder
    >>> from segrec.segment import KMeansSegmenter, profile_segments, reassign_segmentation
    >>> feats = FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder()).fit_transform(fit)
    >>> seg = KMeansSegmenter(n_segments="auto", random_state=0).fit(feats).segmentation_  # doctest: +SKIP
    >>> [p.description for p in profile_segments(seg.labels, fit)]  # doctest: +SKIP
    >>> better = reassign_segmentation(seg, fit, feats)  # GLSLIM-style  # doctest: +SKIP
    >>> better.extra["reassignment"]["heldout_after"]  # doctest: +SKIP
"""

from .api import (
    METHODS,
    SEGMENTERS,
    Placement,
    SegmentationPipeline,
    default_features,
    make_segmenter,
    segment_interactions,
)
from .base import Segmentation, Segmenter, SegmenterConfig, nearest_center, quality_metrics
from .downstream import DownstreamResult, segment_ndcg
from .gmm import GMMConfig, GMMSegmenter
from .hierarchical import AgglomerativeConfig, AgglomerativeSegmenter
from .kmeans import KMeansConfig, KMeansSegmenter
from .optimize import ReassignConfig, ReassignmentResult, optimize_segments, reassign_segmentation
from .profile import SegmentProfile, profile_segments, profiles_frame
from .select_k import KSelection, MethodSelection, select_method, select_n_segments, stability_ari
from .spectral import SpectralConfig, SpectralSegmenter
from .tiers import TierConfig, TierSegmenter
from .vae import VAEConfig, VAESegmenter

__all__ = [
    "METHODS",
    "SEGMENTERS",
    "AgglomerativeConfig",
    "AgglomerativeSegmenter",
    "DownstreamResult",
    "GMMConfig",
    "GMMSegmenter",
    "KMeansConfig",
    "KMeansSegmenter",
    "KSelection",
    "MethodSelection",
    "Placement",
    "ReassignConfig",
    "ReassignmentResult",
    "SegmentProfile",
    "Segmentation",
    "SegmentationPipeline",
    "Segmenter",
    "SegmenterConfig",
    "SpectralConfig",
    "SpectralSegmenter",
    "TierConfig",
    "TierSegmenter",
    "VAEConfig",
    "VAESegmenter",
    "default_features",
    "make_segmenter",
    "nearest_center",
    "optimize_segments",
    "profile_segments",
    "profiles_frame",
    "quality_metrics",
    "reassign_segmentation",
    "segment_interactions",
    "segment_ndcg",
    "select_method",
    "select_n_segments",
    "stability_ari",
]
