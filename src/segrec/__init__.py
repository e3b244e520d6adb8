"""segrec: segment-aware recommendation with large models.

The public API lives here; see README.md for the tour.
"""

__version__ = "0.1.0"

from .data import Schema, SyntheticData, generate_synthetic, load_interactions  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataValidationError,
    MissingDependencyError,
    NotFittedError,
    SegmentationError,
    SegrecError,
    UnknownIDError,
)
from .split import holdout_split, temporal_split  # noqa: E402
from .types import Interactions, Recommendations, Split, Vocabulary  # noqa: E402

__all__ = [
    "ConfigError",
    "DataValidationError",
    "Interactions",
    "MissingDependencyError",
    "NotFittedError",
    "Recommendations",
    "Schema",
    "SegmentationError",
    "SegrecError",
    "Split",
    "SyntheticData",
    "UnknownIDError",
    "Vocabulary",
    "__version__",
    "generate_synthetic",
    "holdout_split",
    "load_interactions",
    "temporal_split",
]
