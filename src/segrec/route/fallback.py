"""One fallback chain for every path that must never leave a user without a list.

As LensKit's ``FallbackScorer``: each user is tried on their routed tier first,
then on the chain's tiers in order, and the first tier that *can* serve the user
serves them. :class:`FallbackChain` is pure: it knows tier names only, and the
caller says what "try" means — score known users (batch scoring), score new
users from their items, score one user on the server, or merely ask whether a
tier has a model for the user (the cost of a request). So the four paths cannot
drift apart.

Example:
    >>> import numpy as np
    >>> chain = FallbackChain(("global", "popularity"))
    >>> can = {"local": np.array([True, False]), "global": np.array([False, False])}
    >>> chain.run(np.array(["local", "local"], dtype=object),
    ...           lambda tier, rows: can.get(tier, np.ones(2, bool))[rows]).tolist()
    ['local', 'popularity']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FallbackChain"]

#: ``attempt(tier, rows) -> bool mask over rows``: try ``tier`` for those rows, True where it served
Attempt = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FallbackChain:
    """Routed tier first, then ``order``; the first tier that serves a user wins.

    Attributes:
        order: Tier names tried, in order, for users their routed tier cannot serve.
    """

    order: tuple[str, ...] = ()

    def run(self, routed: np.ndarray, attempt: Attempt) -> np.ndarray:
        """Serve every row; returns the serving tier per row (``""`` where none could).

        Args:
            routed: object (n,), the routed tier name per row.
            attempt: Tries a tier on some rows (positions into ``routed``) and returns
                a bool mask over them: True where that tier served the row. It is
                called once per routed tier (with that tier's rows), then once per
                chain tier with the rows still unserved, and never with no rows.

        Returns:
            object (n,), the tier that served each row.
        """
        routed = np.asarray(routed, dtype=object)
        served = np.full(len(routed), "", dtype=object)
        todo = np.ones(len(routed), dtype=bool)

        def step(tier: str, rows: np.ndarray) -> None:
            if not len(rows):
                return
            ok = np.asarray(attempt(tier, rows), dtype=bool)
            served[rows[ok]] = tier
            todo[rows[ok]] = False

        for tier in dict.fromkeys(routed.tolist()):  # each user's routed tier first
            step(tier, np.flatnonzero(routed == tier))
        for tier in self.order:  # then the chain, for whoever is left
            step(tier, np.flatnonzero(todo))
        return served

    def serve_one(self, routed: str,
                  score: Callable[[str], np.ndarray | None]) -> tuple[np.ndarray | None, str]:
        """:meth:`fill` for one user without the batch machinery (the server's hot path).

        Args:
            routed: The user's routed tier.
            score: ``score(tier)`` -> the user's (n_items,) scores, or None when the tier
                cannot score them at all.

        Returns:
            ``(scores, tier)`` from the first tier whose scores are not all NaN; ``(None, "")``
            when none can.
        """
        for tier in (routed, *self.order):
            row = score(tier)
            if row is not None and np.isfinite(row).any():
                return row, tier
        return None, ""

    def fill(self, routed: np.ndarray, n_items: int,
             score: Callable[[str, np.ndarray], np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """Scores through the chain: a tier serves a row when its scores there are not all NaN.

        Args:
            routed: object (n,), the routed tier name per row.
            n_items: Catalogue size.
            score: ``score(tier, rows)`` -> float (len(rows), n_items), or None when
                the tier cannot score these rows at all (absent, no new-user path).

        Returns:
            ``(scores (n, n_items) float32, served tier (n,) object)``; rows nothing
            could score keep NaN and tier ``""``.
        """
        out = np.full((len(routed), n_items), np.nan, dtype=np.float32)

        def attempt(tier: str, rows: np.ndarray) -> np.ndarray:
            scores = score(tier, rows)
            if scores is None:
                return np.zeros(len(rows), dtype=bool)
            scores = np.asarray(scores, dtype=np.float32)
            ok = np.isfinite(scores).any(1)
            out[rows[ok]] = scores[ok]
            return ok

        return out, self.run(routed, attempt)
