"""Column mapping for interaction files and their optional items / users tables.

A :class:`Schema` says which column holds what and how the file is delimited, so
files whose columns are not called ``user_id,item_id,rating,timestamp`` load
without renaming. Presets cover the native MovieLens formats.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FORMATS", "Schema", "movielens_schema"]


class Schema(BaseModel):
    """Where each field lives in the interactions file and the side tables.

    ``user`` and ``item`` are always required. ``rating`` and ``timestamp`` are
    optional: when left at their defaults they are used if the file has them and
    skipped otherwise (ratings become 1.0, time becomes file order); when set
    explicitly, a missing column is an error. Set them to ``None`` to ignore a
    column the file has.

    Example:
        >>> Schema(user="uid", item="sku", timestamp="ts").user
        'uid'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = "user_id"
    """Column of external user ids (always read as strings)."""
    item: str = "item_id"
    """Column of external item ids (always read as strings)."""
    rating: str | None = "rating"
    """Column of ratings / weights (non-negative numbers), or None."""
    timestamp: str | None = "timestamp"
    """Column of times: epoch seconds (int or float) or ISO-8601 strings, or None."""
    sep: str = ","
    """Field delimiter of text files; several characters (MovieLens ``::``) are allowed."""
    header: bool = True
    """Whether the first line of a text file names the columns."""
    names: tuple[str, ...] | None = None
    """Column names for a file without a header line (required when ``header`` is False)."""
    encoding: str = "utf-8"
    """Text encoding of the interactions file."""
    item_id: str = "item_id"
    """Id column of the items table."""
    title: str = "title"
    """Title column of the items table (optional there)."""
    categories: str = "categories"
    """Categories column of the items table (optional there)."""
    category_sep: str = Field("|", min_length=1)
    """Separator between categories inside the categories column."""
    user_id: str = "user_id"
    """Id column of the users table."""
    table_sep: str = ","
    """Field delimiter of the items / users tables when they are text files."""

    @field_validator("sep", "table_sep")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value or "\n" in value or "\r" in value:
            raise ValueError("a separator must be a non-empty string without newlines")
        return value

    @model_validator(mode="after")
    def _names_without_header(self) -> Schema:
        if not self.header and not self.names:
            raise ValueError("a file without a header line needs names=(...) for its columns")
        return self

    def is_explicit(self, field: str) -> bool:
        """Whether ``field`` was set by the caller rather than left at its default."""
        return field in self.model_fields_set


#: ``fmt`` values of :func:`~segrec.data.load.load_interactions` with a fixed layout.
FORMATS = ("auto", "csv", "parquet", "ml-100k", "ml-1m", "ml-latest")


def movielens_schema(fmt: str) -> Schema:
    """The schema of a native MovieLens ratings file.

    Args:
        fmt: ``"ml-100k"`` (``u.data``: tab-separated, no header), ``"ml-1m"``
            (``ratings.dat``: ``::``-separated, no header) or ``"ml-latest"``
            (``ratings.csv``: header ``userId,movieId,rating,timestamp``).

    Returns:
        A :class:`Schema` that reads that file into user/item/rating/timestamp.

    Raises:
        ValueError: For any other ``fmt``.
    """
    names = ("user_id", "item_id", "rating", "timestamp")
    if fmt == "ml-100k":
        return Schema(sep="\t", header=False, names=names)
    if fmt == "ml-1m":
        return Schema(sep="::", header=False, names=names, encoding="latin-1")
    if fmt == "ml-latest":
        return Schema(user="userId", item="movieId", item_id="movieId", user_id="userId", categories="genres")
    raise ValueError(f"no MovieLens preset named {fmt!r}; expected 'ml-100k', 'ml-1m' or 'ml-latest'")
