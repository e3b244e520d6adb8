"""Request and response bodies of the HTTP API (pydantic models, also the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ItemOut", "RecommendRequest", "RecommendResponse", "ReloadRequest", "UserSegment",
           "MAX_ID_LENGTH", "MAX_RELOAD_PATH"]

#: longest path ``POST /v1/admin/reload`` accepts (Linux allows 4096 bytes; real run paths are short)
MAX_RELOAD_PATH = 1024

#: longest external id a request may carry (ids in real logs are far shorter)
MAX_ID_LENGTH = 256
#: largest request body in bytes; bigger bodies get 413 before they are read
MAX_BODY_BYTES = 1 << 20

Id = Annotated[str, Field(max_length=MAX_ID_LENGTH)] | int


class RecommendRequest(BaseModel):
    """Body of ``POST /v1/recommend``."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="External user id; known users are served from their "
                                                 "history.")
    recent_items: list[Id] = Field(default_factory=list, max_length=1000,
                                   description="A new user's recent items, oldest first.")
    attributes: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, max_length=64, description="A new user's attributes (users-table columns).")
    k: int = Field(10, ge=1, description="List length (at most the server's max_k).")
    exclude: list[Id] = Field(default_factory=list, max_length=10000, description="Items never to return.")
    exclude_seen: bool = Field(True, description="Leave out a known user's fit items.")


class ItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    score: float
    title: str | None = None


class RecommendResponse(BaseModel):
    """Answer of ``POST /v1/recommend``."""

    user_id: str | None
    items: list[ItemOut]
    segment: int | None = Field(description="The user's segment (None when none could be assigned).")
    tier: str = Field(description="What produced the scores: a tier, segment_popularity or popularity.")
    routed_tier: str | None = Field(description="The tier the routing chose for the segment.")
    fallback: bool = Field(description="True when the routed tier did not serve the request.")
    new_user: bool
    reason: str | None = None
    segment_confidence: float | None = None
    evidence: str | None = None
    unknown_items: list[str] = Field(default_factory=list)
    generation: int = Field(description="Artifact generation (increments on every reload).")


class UserSegment(BaseModel):
    """Answer of ``GET /v1/users/{user_id}/segment``."""

    user_id: str
    segment: int | None
    tier: str


class ReloadRequest(BaseModel):
    """Body of ``POST /v1/admin/reload``."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, max_length=MAX_RELOAD_PATH,
                             description="New artifact directory inside the server's reload root "
                                         "(default: reload the current one).")
