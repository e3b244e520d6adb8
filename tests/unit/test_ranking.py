"""Top-k selection: tie-breaking to the lower id, seen masking, short lists, chunking."""

import numpy as np
import pytest
import scipy.sparse as sp

from segrec.evaluate.ranking import hit_matrix, mask_seen, quick_ndcg, rank_in_chunks, top_k


def test_tie_padding_never_outranks_a_real_candidate():
    # regression: rows with fewer boundary-tied candidates were padded with a copy of a
    # high-scored candidate, which could appear twice in the list (helper report, issue 2)
    items, _ = top_k(np.array([[3.0, 1.0, 1.0, 0.0], [0.0, 2.0, 3.0, 0.0]]), 2)
    assert items.tolist() == [[0, 1], [2, 1]]


def reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Plain Python: sort by (-score, item id); -inf items become -1."""
    out = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out.append([j if np.isfinite(row[j]) else -1 for j in order])
    return np.array(out, dtype=np.int64).reshape(len(scores), min(k, scores.shape[1]))


def test_ties_break_towards_the_lower_item_id():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(scores, 2)[0].tolist() == [[1, 2]]
    assert top_k(scores, 4)[0].tolist() == [[1, 2, 4, 3]]
    values = top_k(scores, 4)[1]
    assert values.dtype == np.float32 and values.tolist() == [[3.0, 3.0, 3.0, 2.0]]


def test_padded_tie_rows_do_not_repeat_items():
    # row 0 has three candidates tied at the cut, row 1 two: row 1 gets padded
    assert top_k(np.array([[3.0, 1.0, 1.0, 0.0], [0.0, 2.0, 3.0, 0.0]]), 2)[0].tolist() == [[0, 1], [2, 1]]


def test_ties_straddling_the_k_th_place():
    scores = np.array([[5.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0, 5.0]])
    assert top_k(scores, 3)[0].tolist() == [[0, 1, 2], [5, 1, 2]]


def test_minus_inf_items_pad_with_minus_one():
    scores = np.array([[1.0, -np.inf, 2.0]])
    items, values = top_k(scores, 3)
    assert items.tolist() == [[2, 0, -1]]
    assert values[0, :2].tolist() == [2.0, 1.0] and np.isneginf(values[0, 2])


def test_k_larger_than_the_catalogue_returns_every_item():
    scores = np.array([[0.1, 0.3], [0.2, 0.2]])
    items, values = top_k(scores, 10)
    assert items.shape == (2, 2) and items.tolist() == [[1, 0], [0, 1]]
    assert top_k(scores, 0)[0].shape == (2, 0)


@pytest.mark.parametrize("k", [3, 7])
def test_matches_a_plain_python_reference_with_ties_at_the_cut(k):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 12)).astype(np.float64)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    assert top_k(scores, k)[0].tolist() == reference_top_k(scores, k).tolist()


@pytest.mark.parametrize("k", [1, 20])
def test_matches_a_plain_python_reference_with_many_ties(k):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 12)).astype(np.float64)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    assert top_k(scores, k)[0].tolist() == reference_top_k(scores, k).tolist()


def test_mask_seen_sets_minus_inf_and_nan_ranks_last():
    seen = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    scores = np.array([[4.0, 3.0, np.nan, 1.0], [1.0, 2.0, 3.0, 4.0]])
    out = mask_seen(scores, seen, np.array([0, 2]))  # rows are users 0 and 2
    assert out is scores  # in place
    assert np.isneginf(out[0, [0, 2, 3]]).all() and out[0, 1] == 3.0
    assert np.isneginf(out[1, 1]) and out[1, [0, 2, 3]].tolist() == [1.0, 3.0, 4.0]
    assert mask_seen(np.array([[np.nan, 1.0]]), None, np.array([0])).tolist() == [[-np.inf, 1.0]]


def test_rank_in_chunks_equals_one_chunk_and_masks_seen_items():
    rng = np.random.default_rng(1)
    table = rng.integers(0, 5, size=(37, 15)).astype(np.float32)  # many ties
    seen = sp.random(37, 15, density=0.3, random_state=2, format="csr")
    users = np.array([5, 0, 36, 17, 17, 3])

    def score(rows):
        return table[rows]

    one_items, one_scores = rank_in_chunks(score, users, 6, seen=seen, chunk_size=1024)
    for size in (1, 2, 4):
        items, scores = rank_in_chunks(score, users, 6, seen=seen, chunk_size=size)
        assert np.array_equal(items, one_items) and np.array_equal(scores, one_scores)


def test_rank_in_chunks_matches_the_reference_with_seen_masked():
    rng = np.random.default_rng(1)
    table = rng.integers(0, 5, size=(37, 15)).astype(np.float32)  # many ties
    seen = sp.random(37, 15, density=0.3, random_state=2, format="csr")
    users = np.array([5, 0, 36, 17, 17, 3])
    items, _ = rank_in_chunks(lambda rows: table[rows], users, 6, seen=seen, chunk_size=2)
    expected = table[users].astype(np.float64)
    expected[seen[users].toarray() > 0] = -np.inf
    assert items.tolist() == reference_top_k(expected, 6).tolist()


def test_rank_in_chunks_does_not_modify_the_model_scores():
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    before = table.copy()
    seen = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    rank_in_chunks(lambda rows: table[rows], np.arange(3), 2, seen=seen)
    assert np.array_equal(table, before)


def test_rank_in_chunks_with_no_users():
    items, scores = rank_in_chunks(lambda rows: np.zeros((len(rows), 4)), np.array([], np.int64), 3)
    assert items.shape == (0, 3) and scores.shape == (0, 3)


def test_hit_matrix_marks_test_items_and_ignores_padding():
    truth = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float32))
    top = np.array([[3, 0, -1], [1, 0, 2]])
    hits = hit_matrix(top, truth, np.array([0, 1]))
    assert hits.tolist() == [[True, False, False], [False, True, False]]


def test_quick_ndcg_on_a_hand_case():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    scores = np.array([[9.0, 1.0, 2.0, 3.0, 0.0], [0.0] * 5], dtype=np.float32)
    # user 0: ranks 3 > 2 > 1 > 4 (0 is seen) -> the valid item 2 is at rank 2 -> 1/log2(3)
    assert quick_ndcg(lambda rows: scores[rows], train, valid, k=3) == pytest.approx(1 / np.log2(3))


def test_quick_ndcg_with_k_larger_than_the_catalogue():
    # user 0: train {0}, valid {2}; the model ranks 3 > 2 > 1 (> 0 seen) -> hit at rank 2 -> 1/log2(3)
    # user 1: nothing in valid -> not counted
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    scores = np.array([[9.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert quick_ndcg(lambda rows: scores[rows], train, valid, k=10) == pytest.approx(1 / np.log2(3))
