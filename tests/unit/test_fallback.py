"""The one fallback chain (issue 13): routed tier first, then the chain, first tier that serves wins."""

import numpy as np

from segrec.route import FallbackChain


def test_each_user_tries_the_routed_tier_then_the_chain_in_order():
    calls = []
    can = {"local": np.array([True, False, False, True]), "global": np.array([False, False, True, False])}

    def attempt(tier, rows):
        calls.append((tier, rows.tolist()))
        return can.get(tier, np.ones(4, bool))[rows]

    routed = np.array(["local", "local", "global", "local"], dtype=object)
    served = FallbackChain(("global", "popularity")).run(routed, attempt)
    assert served.tolist() == ["local", "popularity", "global", "local"]
    # routed tiers once with their users, then each chain tier with who is left; never with no rows
    assert calls == [("local", [0, 1, 3]), ("global", [2]), ("global", [1]), ("popularity", [1])]


def test_fill_takes_the_first_finite_row_and_leaves_nan_where_nothing_scores():
    nan = np.full(3, np.nan, np.float32)
    table = {"a": np.array([[1, 2, 3], nan, nan], np.float32), "b": np.array([[9, 9, 9], [4, 5, 6], nan])}

    def score(tier, rows):
        return None if tier == "absent" else table[tier][rows]

    scores, served = FallbackChain(("absent", "b")).fill(np.array(["a"] * 3, dtype=object), 3, score)
    np.testing.assert_array_equal(scores[:2], [[1, 2, 3], [4, 5, 6]])
    assert np.isnan(scores[2]).all() and served.tolist() == ["a", "b", ""]
