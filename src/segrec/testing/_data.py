"""Known-answer data: planted user groups with their own items, and random logs."""

from __future__ import annotations

import numpy as np

from ..split import temporal_split
from ..types import Interactions, Split, Vocabulary

__all__ = ["factor_catalogue", "planted_features", "planted_interactions", "planted_labels", "planted_split",
           "random_interactions"]


def planted_interactions(
    n_groups: int = 3,
    users_per_group: int = 12,
    items_per_group: int = 7,
    n_cold_items: int = 2,
    seed: int = 0,
) -> Interactions:
    """A log of G user groups, each interacting with exactly its own block of items.

    Every user of group ``g`` interacts with all ``items_per_group`` items of block
    ``g``, in a user-specific rotation, so each item of the block is the *last*
    (test) item of some users and an early one of others. ``n_cold_items`` items
    nobody touched complete the catalogue. Dense item ids are shuffled so a model
    cannot lean on id order; external ids are ``u0..`` and ``i0..``.

    Args:
        n_groups: Number of groups G (and item blocks).
        users_per_group: Users in each group.
        items_per_group: Items in each block (7 splits 5/1/1 under the protocol).
        n_cold_items: Items with no interactions.
        seed: Shuffling seed.

    Returns:
        Interactions with ``n_groups * users_per_group`` users and
        ``n_groups * items_per_group + n_cold_items`` items.

    Example:
        >>> data = planted_interactions()
        >>> data.n_users, data.n_items, len(data)
        (36, 23, 252)
    """
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_group + n_cold_items
    item_perm = rng.permutation(n_items)  # block item b*m + j lives at dense id item_perm[...]
    users, items, times = [], [], []
    for g in range(n_groups):
        block = item_perm[g * items_per_group : (g + 1) * items_per_group]
        for j in range(users_per_group):
            u = g * users_per_group + j
            order = np.roll(block, -(j % items_per_group))  # last item differs across users
            users.extend([u] * items_per_group)
            items.extend(order.tolist())
            times.extend(range(1000 * u, 1000 * u + items_per_group))
    n_users = n_groups * users_per_group
    return Interactions.from_arrays(
        np.array(users), np.array(items), timestamps=np.array(times),
        user_vocab=Vocabulary([f"u{i}" for i in range(n_users)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
        source="<planted>",
    )


def planted_split(**kwargs) -> Split:
    """:func:`planted_interactions` split by the protocol (5 train, 1 valid, 1 test per user).

    Fitted on ``train`` with ``valid``, the only unseen item of a user's block is
    their test item, so any model that learned the blocks has recall@1 = 1.0.

    Args:
        **kwargs: Passed to :func:`planted_interactions`.
    """
    return temporal_split(planted_interactions(**kwargs), name="planted")


def random_interactions(
    n_users: int = 20,
    n_items: int = 15,
    n_interactions: int = 80,
    seed: int = 0,
    *,
    user_prefix: str = "u",
    item_prefix: str = "i",
) -> Interactions:
    """Uniformly random (user, item) pairs without duplicates, every user with >= 1 row.

    Args:
        n_users: Users in the vocabulary.
        n_items: Items in the vocabulary.
        n_interactions: Target number of rows (fewer after removing duplicate pairs).
        seed: Random seed.
        user_prefix: External user ids are ``f"{user_prefix}{i}"``.
        item_prefix: External item ids are ``f"{item_prefix}{i}"``.

    Returns:
        Interactions with integer ratings 1..5 and distinct timestamps.
    """
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, max(n_interactions - n_users, 0))])
    items = rng.integers(0, n_items, len(users))
    _, keep = np.unique(users * n_items + items, return_index=True)
    keep = np.sort(keep)
    return Interactions.from_arrays(
        users[keep], items[keep],
        ratings=rng.integers(1, 6, len(keep)), timestamps=rng.permutation(len(keep)),
        user_vocab=Vocabulary([f"{user_prefix}{i}" for i in range(n_users)]),
        item_vocab=Vocabulary([f"{item_prefix}{i}" for i in range(n_items)]),
        source="<random>",
    )


def planted_labels(n_users: int, n_groups: int = 3) -> np.ndarray:
    """The planted group of each dense user of :func:`planted_interactions` (users are in group order).

    For any other data it is still a valid labelling: ``n_groups`` contiguous blocks of users.
    """
    return (np.arange(n_users) * n_groups // max(n_users, 1)).astype(np.int64)


def planted_features(n_groups: int = 3, n_users: int = 90, noise: float = 0.1, seed: int = 0):
    """User features of ``n_users`` users in ``n_groups`` planted groups, and the true groups.

    Each group consumes its own block of 10 items (a share ``noise`` of draws from
    anywhere), and items have titles and categories by block, so behaviour, text and
    collaborative blocks all carry the groups. A segmenter that works recovers them.

    Returns:
        ``(UserFeatures, truth)`` with ``truth`` int (n_users,).
    """
    import pandas as pd

    from ..features import FeaturePipeline, HashingEmbedder

    rng = np.random.default_rng(seed)
    truth = np.arange(n_users) % n_groups
    n_items = 10 * n_groups
    users, items = [], []
    for u in range(n_users):
        n = 6 + u % 7
        own = rng.integers(0, 10, n) + 10 * truth[u]
        users += [u] * n
        items += list(np.where(rng.random(n) < 1 - noise, own, rng.integers(0, n_items, n)))
    words = ["star", "love", "ghost", "race", "chef", "tide", "iron", "myth"]
    genres = ["SciFi", "Romance", "Horror", "Sports", "Cooking", "Sea", "War", "Fantasy"]
    table = pd.DataFrame({"title": [f"{words[i // 10 % 8]} {i}" for i in range(n_items)],
                          "categories": [genres[i // 10 % 8] for i in range(n_items)]})
    data = Interactions.from_arrays(users, items, item_table=table,
                                    user_vocab=Vocabulary([f"u{u}" for u in range(n_users)]),
                                    item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]))
    pipe = FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder(16))
    return pipe.fit_transform(data), truth


def factor_catalogue(n_users: int = 2000, n_items: int = 100_000, dim: int = 64, n_topics: int = 256,
                     history: int = 30, seed: int = 0):
    """A fitted ALS model over a synthetic catalogue with topic structure, for serving at scale.

    Items and users are noisy copies of ``n_topics`` topic vectors (a user mixes 1-3
    topics and has ``history`` items from them), as learned embeddings cluster; no
    training is run, so a 100k-item catalogue takes a second. Used to measure exact
    against approximate top-k (``benchmarks/bench_ann.py``, the ANN tests).

    Returns:
        A fitted :class:`~segrec.models.mf.ALSRecommender` (user and item factors set).
    """
    import scipy.sparse as sp

    from ..models.mf import ALSRecommender

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(n_topics, dim)).astype(np.float32)
    item_topic = rng.integers(0, n_topics, n_items)
    items = (topics[item_topic] + 0.6 * rng.normal(size=(n_items, dim))).astype(np.float32) / np.sqrt(dim)
    mix = rng.integers(0, n_topics, (n_users, 3))
    weights = rng.dirichlet(np.ones(3), n_users).astype(np.float32)
    users = np.einsum("uk,ukd->ud", weights, topics[mix]) + 0.3 * rng.normal(size=(n_users, dim))
    by_topic = np.argsort(item_topic, kind="stable")
    starts = np.searchsorted(item_topic[by_topic], np.arange(n_topics + 1))
    rows, cols = [], []
    for u in range(n_users):  # each user's history from their own topics
        t = mix[u, rng.integers(0, 3, history)]
        pos = starts[t] + (rng.random(history) * np.maximum(starts[t + 1] - starts[t], 1)).astype(np.int64)
        picked = np.unique(by_topic[np.minimum(pos, n_items - 1)])
        rows.append(np.full(len(picked), u))
        cols.append(picked)
    cols_flat = np.concatenate(cols)
    seen = sp.csr_matrix((np.ones(len(cols_flat), np.float32), (np.concatenate(rows), cols_flat)),
                         shape=(n_users, n_items))
    model = ALSRecommender(embedding_size=dim, reg=1.0, backend="numpy")
    model.user_vocab_ = Vocabulary([f"u{u}" for u in range(n_users)])
    model.item_vocab_ = Vocabulary([f"i{i}" for i in range(n_items)])
    model.seen_, model.fitted_on_, model.fit_timings_ = seen, "synthetic-factors", {}
    model.user_factors_ = users.astype(np.float32) / np.sqrt(dim)
    model.item_factors_ = items
    model.embedding_size_, model.reg_, model.backend_, model.tuning_ = dim, 1.0, "numpy", None
    return model
