"""Choosing per segment on inner validation with shrinkage, cross-fitted gates and an honest estimate."""

import numpy as np
import pytest

from segrec.route.selection import Option, paired_ci, select, shrunk_values


def _values(means_by_segment, sizes, noise=0.3, seed=0):
    """Per-user values: Bernoulli-ish noise around each segment's option means."""
    rng = np.random.default_rng(seed)
    rows, segs = [], []
    for s, (means, n) in enumerate(zip(means_by_segment, sizes, strict=True)):
        rows.append(np.clip(np.asarray(means)[None, :] + rng.normal(0, noise, (n, len(means))), 0, 1))
        segs += [s] * n
    return np.vstack(rows), np.array(segs)


def test_a_segment_with_its_own_winner_leaves_the_best_single_system():
    options = [Option("a"), Option("b"), Option("c")]
    # "a" is best overall; segment 1 (big) is much better served by "b"
    values, segs = _values([[0.30, 0.20, 0.10], [0.20, 0.40, 0.10]], [1500, 1500])
    sel = select(values, options, segs)
    assert options[sel.best_single].tier in {"a", "b"}
    assert options[sel.served[1]].tier == "b" and options[sel.served[0]].tier == "a"
    assert sel.gain > 0 and sel.ci[0] > 0  # the honest gain is real
    assert sel.gates[0] != sel.gates[1]  # only the segment not on the best single left it


def test_under_pure_noise_the_honest_gain_is_not_the_in_sample_one():
    # eight options, all equally good in every segment: any per-segment pick is noise
    options = [Option(f"t{i}") for i in range(8)]
    values, segs = _values([[0.2] * 8] * 4, [60, 60, 60, 60], noise=0.3, seed=1)
    sel = select(values, options, segs)
    in_sample = np.mean([values[segs == s][:, sel.chosen[s]].mean() for s in range(4)])
    best = values[:, sel.best_single].mean()
    assert in_sample >= best  # the winner's curse: picking per segment always looks better in sample
    assert sel.ci[0] <= 0.0 <= sel.ci[1] + 1e-12  # honestly, nothing is gained
    assert sel.gain <= in_sample - best + 1e-12


def test_small_segments_borrow_the_global_choice():
    options = [Option("a"), Option("b")]
    # "a" is better everywhere; twelve tiny segments are so noisy that some favour "b" in sample
    values, segs = _values([[0.30, 0.20]] * 14, [1500, 1500] + [6] * 12, noise=0.4, seed=2)
    tiny = range(2, 14)
    in_sample_b = [s for s in tiny if values[segs == s, 1].mean() > values[segs == s, 0].mean()]
    assert in_sample_b  # the trap is there
    sel = select(values, options, segs)
    assert sel.m > 0  # cross-fitting chose to shrink
    assert all(options[sel.served[s]].tier == "a" for s in tiny)
    labels, shrunk, overall = shrunk_values(values, segs, sel.m)
    assert (shrunk[2:].argmax(1) == 0).all() and overall.argmax() == 0


def test_blend_alpha_is_chosen_per_segment_when_the_data_support_it():
    alphas = [0.2, 0.5, 0.8]
    options = [Option("big"), Option("small")] + [Option("big+small", single=False, pair=("big", "small"),
                                                          alpha=a) for a in alphas]
    # segment 0 peaks at α=0.2, segment 1 at α=0.8; both big segments
    values, segs = _values([[0.20, 0.25, 0.32, 0.28, 0.22], [0.30, 0.18, 0.24, 0.29, 0.36]], [2000, 2000],
                           noise=0.2, seed=3)
    sel = select(values, options, segs)
    assert options[sel.served[0]].alpha == 0.2 and options[sel.served[1]].alpha == 0.8
    table = sel.table()
    assert list(table["served"]) == ["big+small", "big+small"]
    summary = sel.to_dict()
    assert summary["honest_gain"] > 0 and summary["segments"][0]["alpha"] == 0.2


def test_select_rejects_bad_input_and_ci_is_sane():
    with pytest.raises(ValueError, match="finite"):
        select(np.array([[np.nan, 0.1]]), [Option("a"), Option("b")], np.array([0]))
    d = np.random.default_rng(0).normal(0.01, 0.1, 4000)
    lo, hi = paired_ci(d)
    assert lo < d.mean() < hi and hi - lo < 0.02
