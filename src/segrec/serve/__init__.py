"""Serving: the HTTP API (extra ``serve``); FastAPI is imported only when an app is built."""

from .http import create_app

__all__ = ["create_app"]
