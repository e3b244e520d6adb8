"""Whether a loaded dataset is big enough for a run to mean anything."""

from __future__ import annotations

from ..errors import DataValidationError


def check_usable(data, *, split: bool = True) -> None:
    """Stop with one line when a dataset is too small for a run to mean anything.

    A run ranks items for users and compares systems across users, so it needs at
    least two distinct items and two users; with the temporal split at least one user
    needs two interactions, or nothing would be left to test on.

    Args:
        data: The loaded :class:`~segrec.types.Interactions`.
        split: Whether the run holds out a test part (False with ``--no-split``).

    Raises:
        DataValidationError: The data cannot support a run (the message says what is needed).
    """
    source = data.source
    if data.n_items < 2:
        only = f" ({data.item_vocab.ids[0]!r})" if data.n_items else ""
        raise DataValidationError(f"{source}: has {data.n_items} distinct item{only}; a recommender ranks "
                                  "items, so it needs at least 2", source=source, problem="too few items")
    if data.n_users < 2:
        raise DataValidationError(f"{source}: has {data.n_users} user; segments and the comparison across "
                                  "users need at least 2", source=source, problem="too few users")
    if split and int(data.user_counts().max()) < 2:
        raise DataValidationError(f"{source}: every user has a single interaction, so the temporal split "
                                  "leaves nothing to test on; pass --no-split to fit without evaluating, "
                                  "or use a log with longer histories", source=source,
                                  problem="histories too short")
