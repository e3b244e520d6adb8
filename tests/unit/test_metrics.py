"""Metrics on hand-computed cases (EVAL_PROTOCOL.md, "Ranking and metrics").

Three users, lists of length 4:
    user 0: hits at ranks 2 and 4, 3 test items
    user 1: hit at rank 1, 1 test item
    user 2: no hit, 2 test items
Discounts 1/log2(rank+1): rank1 1, rank2 0.6309298, rank3 0.5, rank4 0.4306766.
"""

import numpy as np
import pytest

from segrec.evaluate.metrics import PER_USER_METRICS, coverage, hit_rate, mrr, ndcg, precision, recall

HITS = np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
N_REL = np.array([3, 1, 2])
D2, D3, D4 = 0.6309297535714575, 0.5, 0.43067655807339306  # 1/log2(3), 1/log2(4), 1/log2(5)


def test_recall():
    assert recall(HITS, N_REL, 4).tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert recall(HITS, N_REL, 2).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert recall(HITS, N_REL, 1).tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_precision_divides_by_k():
    assert precision(HITS, N_REL, 4).tolist() == pytest.approx([0.5, 0.25, 0.0])
    assert precision(HITS, N_REL, 2).tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_hit_rate():
    assert hit_rate(HITS, N_REL, 4).tolist() == [1.0, 1.0, 0.0]
    assert hit_rate(HITS, N_REL, 1).tolist() == [0.0, 1.0, 0.0]


def test_mrr_is_reciprocal_rank_of_first_hit_within_k():
    assert mrr(HITS, N_REL, 4).tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert mrr(HITS, N_REL, 1).tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_ndcg_binary_gains_log2_discount_ideal_over_min_test_k():
    # user 0 @4: DCG = D2 + D4 = 1.0616063; IDCG = 1 + D2 + D3 (3 ideal hits) = 2.1309298 -> 0.4981892
    # user 0 @2: DCG = D2; IDCG = 1 + D2 (min(3, 2) = 2 ideal hits) -> 0.3868528
    assert ndcg(HITS, N_REL, 4).tolist() == pytest.approx([(D2 + D4) / (1 + D2 + D3), 1.0, 0.0])
    assert ndcg(HITS, N_REL, 4)[0] == pytest.approx(0.4981892, abs=1e-7)
    assert ndcg(HITS, N_REL, 2).tolist() == pytest.approx([D2 / (1 + D2), 1.0, 0.0])
    assert ndcg(HITS, N_REL, 2)[0] == pytest.approx(0.3868528, abs=1e-7)


def test_ndcg_is_one_when_all_k_slots_hit_even_with_more_test_items():
    hits = np.ones((1, 2), dtype=bool)
    assert ndcg(hits, np.array([5]), 2).tolist() == [1.0]
    assert recall(hits, np.array([5]), 2).tolist() == [0.4]


def test_users_without_test_items_score_zero_not_nan():
    hits = np.zeros((1, 3), dtype=bool)
    for fn in PER_USER_METRICS.values():
        assert fn(hits, np.array([0]), 3).tolist() == [0.0]


def test_single_hit_at_rank_3_of_2_test_items():
    hits = np.array([[0, 0, 1]], dtype=bool)
    # DCG = 0.5, IDCG = 1 + D2
    assert ndcg(hits, np.array([2]), 3)[0] == pytest.approx(0.5 / (1 + D2))
    assert mrr(hits, np.array([2]), 3)[0] == pytest.approx(1 / 3)


def test_coverage_counts_distinct_items_in_top_k_and_ignores_padding():
    top = np.array([[0, 1, 5], [1, 2, 6], [-1, -1, -1]])
    assert coverage(top, 10, 2) == pytest.approx(0.3)  # {0, 1, 2}
    assert coverage(top, 10, 1) == pytest.approx(0.2)  # {0, 1}
    assert coverage(top, 10, 3) == pytest.approx(0.5)  # {0, 1, 2, 5, 6}
    assert coverage(top, 0, 3) == 0.0


def test_registry_names():
    assert set(PER_USER_METRICS) == {"ndcg", "recall", "hit_rate", "mrr", "precision"}
