"""Routing: which model tier serves each segment."""

from .policy import choose_accuracy

__all__ = ["choose_accuracy"]
