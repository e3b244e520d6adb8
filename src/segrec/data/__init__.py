"""Data layer: load and validate interaction logs, and generate synthetic ones."""

from .load import load_interactions
from .schema import Schema, movielens_schema
from .synthetic import SyntheticData, generate_synthetic

__all__ = ["Schema", "SyntheticData", "generate_synthetic", "load_interactions", "movielens_schema"]
