"""Data layer: load and validate interaction logs, and generate synthetic ones."""

from .load import load_interactions
from .schema import Schema, movielens_schema

__all__ = ["Schema", "load_interactions", "movielens_schema"]
