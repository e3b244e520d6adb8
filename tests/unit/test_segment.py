"""Segmenters on planted data (issue 3): recovery, automatic K, determinism, errors, artifacts,
downstream criterion, GLSLIM-style reassignment, profiles and new users."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from segrec.errors import SegmentationError
from segrec.features import FeaturePipeline, HashingEmbedder, NewUsers
from segrec.segment import (
    AgglomerativeSegmenter,
    GMMSegmenter,
    KMeansSegmenter,
    Segmentation,
    SegmentationPipeline,
    SpectralSegmenter,
    TierSegmenter,
    VAESegmenter,
    optimize_segments,
    profile_segments,
    profiles_frame,
    reassign_segmentation,
    segment_interactions,
    segment_ndcg,
    select_n_segments,
    stability_ari,
)
from segrec.split import holdout_split
from segrec.types import Interactions, Vocabulary

THEMES = [
    ["space", "robot", "alien", "galaxy", "laser"],
    ["love", "wedding", "heart", "kiss", "romance"],
    ["zombie", "ghost", "blood", "haunted", "scream"],
    ["horse", "cowboy", "desert", "sheriff", "outlaw"],
    ["dragon", "wizard", "sword", "castle", "quest"],
    ["detective", "murder", "clue", "alibi", "suspect"],
]
GENRES = ["SciFi", "Romance", "Horror", "Western", "Fantasy", "Mystery"]


def make_planted(n_users=240, n_items=120, n_segments=4, seed=0, purity=0.85, with_users=True):
    """Planted segments: segment s mostly consumes items of genre s (titles share theme words)."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % n_segments
    titles = [f"{rng.choice(THEMES[g])} {rng.choice(THEMES[g])} {i}" for i, g in enumerate(genre)]
    item_table = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": titles,
            "categories": [GENRES[g] for g in genre],
        }
    )
    truth = rng.permutation(np.arange(n_users) % n_segments)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(15, 40))
        own = np.flatnonzero(genre == truth[u])
        pick = np.where(rng.random(n) < purity, rng.choice(own, n), rng.integers(0, n_items, n))
        users += [u] * n
        items += list(pick)
        times += list(np.sort(rng.integers(0, 10_000_000, n)))
    user_table = None
    if with_users:
        user_table = pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in range(n_users)],
                "age": 20 + 8 * truth + rng.integers(0, 5, n_users),
                "gender": np.where(rng.random(n_users) < 0.2 + 0.6 * (truth % 2), "F", "M"),
            }
        )
    data = Interactions.from_arrays(
        users,
        items,
        timestamps=times,
        user_vocab=Vocabulary([f"u{u}" for u in range(n_users)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
        item_table=item_table,
        user_table=user_table,
    )
    return data, truth


@pytest.fixture(scope="module")
def planted():
    data, truth = make_planted()
    feats = FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder(32)).fit_transform(data)
    return data, truth, feats


def ari(a, b):
    return adjusted_rand_score(a, b)


# one test per segmenter: recovers the planted segments, and "auto" finds K = 4
SEGMENTERS = {
    "kmeans": lambda k: KMeansSegmenter(n_segments=k, random_state=0),
    "gmm": lambda k: GMMSegmenter(n_segments=k, random_state=0),
    "vae": lambda k: VAESegmenter(n_segments=k, random_state=0, epochs=20, k_candidates=(2, 3, 4, 5, 6)),
    "agglomerative": lambda k: AgglomerativeSegmenter(n_segments=k),
    "spectral": lambda k: SpectralSegmenter(n_segments=k, random_state=0, k_candidates=(2, 3, 4, 5, 6)),
}


@pytest.mark.parametrize("method", list(SEGMENTERS))
def test_recovers_planted_segments_and_auto_k(planted, method):
    data, truth, feats = planted
    seg = SEGMENTERS[method](4).fit(feats)
    assert ari(truth, seg.labels_) >= 0.9
    assert seg.segmentation_.n_segments == 4 and len(seg.segmentation_.labels) == data.n_users
    assert (seg.assign(feats) == seg.labels_).mean() >= 0.95
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spectral: "graph is not fully connected" at small K
        auto = SEGMENTERS[method]("auto").fit(feats)
    assert auto.n_segments_ == 4
    assert auto.k_selection_.best_k == 4
    assert ari(truth, auto.labels_) >= 0.9
    assert auto.segmentation_.extra["k_selection"]["criterion"] == "silhouette"


def test_synthetic_generator_kmeans_gmm_vae():
    synthetic = pytest.importorskip("segrec.data.synthetic")
    s = synthetic.generate_synthetic(n_users=600, n_items=300, n_segments=4, seed=0)
    data = s.to_interactions()
    truth = s.segment_labels(data.user_vocab)
    feats = FeaturePipeline(blocks=("behavior", "text"), embedder=HashingEmbedder(64)).fit_transform(data)
    for seg in (
        KMeansSegmenter(n_segments=4),
        GMMSegmenter(n_segments=4),
        VAESegmenter(n_segments=4, epochs=30),
    ):
        assert ari(truth, seg.fit(feats).labels_) >= 0.9, type(seg).__name__
    assert KMeansSegmenter(n_segments="auto").fit(feats).n_segments_ == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: KMeansSegmenter(n_segments=4, random_state=3),
        lambda: GMMSegmenter(n_segments=4, random_state=3),
        lambda: VAESegmenter(n_segments=4, random_state=3, epochs=5),
    ],
)
def test_same_seed_same_segmentation(planted, make):
    _, _, feats = planted
    a, b = make().fit(feats), make().fit(feats)
    assert np.array_equal(a.labels_, b.labels_)
    sizes = a.segmentation_.sizes()
    assert (np.diff(sizes) <= 0).all()  # canonical: segment 0 is the largest


def test_errors_name_the_problem(planted):
    _, _, feats = planted
    with pytest.raises(SegmentationError, match="larger than the number of users"):
        KMeansSegmenter(n_segments=500).fit(feats)
    dup = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    with pytest.raises(SegmentationError, match="distinct users"):
        KMeansSegmenter(n_segments=5).fit(dup)
    bad = feats.matrix.copy()
    bad[7, 0] = np.nan
    with pytest.raises(SegmentationError, match=r"rows \[7\]"):
        GMMSegmenter(n_segments=2).fit(bad)
    with pytest.raises(ValueError, match="n_segments"):
        KMeansSegmenter(n_segments=0)
    with pytest.raises(SegmentationError, match="item_rows"):
        VAESegmenter(n_segments=2).fit(feats.matrix)
    with pytest.raises(SegmentationError, match="downstream"):
        KMeansSegmenter(n_segments="auto", k_criterion="downstream").fit(feats)


def test_tiers_rules_and_new_users():
    n = np.array([1, 2, 3, 10, 20, 30, 40, 50, 100, 200])
    rows = np.repeat(np.arange(10), n)
    times = np.zeros(len(rows), np.int64)
    times[rows == 9] = 400 * 86400  # everyone but user 9 went quiet 400 days before the end
    data = Interactions.from_arrays(
        rows,
        np.arange(len(rows)) % 7,
        timestamps=times,
        user_vocab=Vocabulary([f"u{i}" for i in range(10)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(7)]),
    )
    feats = FeaturePipeline(blocks=("behavior",)).fit_transform(data)
    seg = TierSegmenter(new_max_interactions=3, activity_quantiles=(0.5, 0.8)).fit(feats)
    names = seg.segmentation_.names
    got = [names[s] for s in seg.labels_]
    # non-new counts 10, 20, 30, 40, 50, 100, 200: median 40, 80% quantile 50 + 0.8 * 50 = 90
    assert got == ["new"] * 3 + ["light"] * 4 + ["regular"] * 1 + ["heavy"] * 2
    assert seg.activity_cuts_ == pytest.approx((40.0, 90.0))
    dormant = TierSegmenter(new_max_interactions=3, dormant_days=100).fit(feats)
    assert [dormant.segmentation_.names[s] for s in dormant.labels_][3:] == ["dormant"] * 6 + ["heavy"]
    pipe = FeaturePipeline(blocks=("behavior",)).fit(data)
    new = pipe.transform_new(NewUsers(["a", "b"], histories=[["i1"], ["i1"] * 60]))
    assert [names[s] for s in seg.assign(new)] == ["new", "regular"]


def test_save_load_roundtrip(planted, tmp_path):
    _, _, feats = planted
    seg = KMeansSegmenter(n_segments=4).fit(feats).segmentation_
    seg.save(tmp_path / "seg")
    back = Segmentation.load(tmp_path / "seg")
    assert np.array_equal(back.labels, seg.labels) and back.n_segments == 4 and back.method == "kmeans"
    assert np.array_equal(back.centers, seg.centers)
    assert back.user_ids.tolist() == feats.user_vocab.ids.tolist()
    assert back.metrics == pytest.approx(seg.metrics)
    assert np.array_equal(back.assign(feats), seg.labels)
    assert back.summary()["sizes"] == [60, 60, 60, 60]
    assert not list(tmp_path.glob(".*"))  # atomic: no temp leftovers
    assert not list((tmp_path / "seg").glob("*.pkl"))


def test_select_k_table_stability_and_downstream(planted):
    data, truth, feats = planted
    sel = select_n_segments(
        KMeansSegmenter(random_state=0),
        feats,
        candidates=(2, 4, 6),
        data=data,
        stability=True,
        downstream=True,
        n_stability_runs=2,
    )
    assert sel.table["k"].tolist() == [2, 4, 6]
    assert sel.table["segmented_ndcg@10"].notna().all()
    assert {
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "stability_ari",
        "global_ndcg@10",
        "segmented_ndcg@10",
    } <= set(sel.table.columns)
    assert sel.best_k == 4
    for crit in ("davies_bouldin", "calinski_harabasz", "stability"):
        assert select_n_segments(
            KMeansSegmenter(), feats, candidates=(2, 4, 6), criterion=crit, n_stability_runs=2
        ).best_k in (2, 4)
    assert stability_ari(KMeansSegmenter(), feats, 4, n_runs=2) >= 0.9


def test_downstream_single_segment_equals_global(planted):
    data, truth, _ = planted
    tr, va = holdout_split(data, 0.1)
    one = segment_ndcg(np.zeros(data.n_users, np.int64), tr, va, min_segment_users=1)
    assert one.segmented == pytest.approx(one.global_) and one.n_local == 1
    planted_res = segment_ndcg(truth, tr, va)
    assert planted_res.n_local == 4 and 0 < planted_res.global_ <= 1


def make_pairs(n_users=200, n_items=40, n_pairs=8, seed=0):
    """Two segments over the same items with conflicting co-occurrence: segment 0 pairs (2m, 2m+1),
    segment 1 pairs (2m+1, 2m+2); only a local item-item model knows which partner comes next."""
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.arange(n_users) % 2)
    users, items = [], []
    for u in range(n_users):
        starts = rng.choice(n_items // 2, n_pairs, replace=False) * 2 + truth[u]
        # first items of all pairs, then their partners: every held-out item's partner is in train
        users += [u] * (2 * n_pairs)
        items += [s % n_items for s in starts] + [(s + 1) % n_items for s in starts]
    data = Interactions.from_arrays(
        users,
        items,
        user_vocab=Vocabulary([f"u{u}" for u in range(n_users)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
    )
    return data, truth


def test_reassignment_moves_users_towards_better_segments(planted):
    # two segments whose item-item structure conflicts: only the right local model predicts
    # a user's held-out partner item, so moving users by inner-valid NDCG repairs a noisy start
    data, truth = make_pairs()
    rng = np.random.default_rng(0)
    noisy = rng.random(data.n_users) < 0.3
    start = np.where(noisy, rng.integers(0, 2, data.n_users), truth)
    res = optimize_segments(start, data, max_iter=5, min_segment_users=10, reg=10.0)
    assert res.objective_after > res.objective_before
    assert res.history[0]["moved"] > res.history[-1]["moved"]  # settling down
    assert ari(truth, res.labels) > ari(truth, start) + 0.2
    assert res.heldout_after > res.heldout_before > res.heldout_global  # honest, untouched tail
    assert set(res.to_dict()) >= {"heldout_before", "heldout_after", "heldout_global", "moved_total"}
    _, _, feats = planted
    pdata = planted[0]
    seg = KMeansSegmenter(n_segments=4).fit(feats).segmentation_
    better = reassign_segmentation(seg, pdata, feats, max_iter=2)
    assert better.method == "kmeans+reassign" and better.centers.shape[0] == better.n_segments
    assert "reassignment" in better.extra
    with pytest.raises(SegmentationError, match="one per user"):
        optimize_segments(start[:10], data)


def test_profiles_find_planted_tastes(planted):
    data, truth, _ = planted
    profiles = profile_segments(truth, data)
    assert [p.size for p in profiles] == [60] * 4
    for s, p in enumerate(profiles):
        assert p.top_categories[0][0] == GENRES[s]
        assert p.top_categories[0][2] > 2.0  # lift against the population
        assert p.description.startswith(f"segment {s}: 60 users (25%)")
        assert "age" in p.demographics and "gender" in p.demographics
    assert profiles[3].demographics["age"]["mean"] > profiles[0].demographics["age"]["mean"]
    frame = profiles_frame(profiles)
    assert frame.columns[:3].tolist() == ["segment", "name", "size"] and len(frame) == 4


def test_new_users_get_the_segment_of_their_items(planted):
    data, truth, _ = planted
    pipe = SegmentationPipeline(
        FeaturePipeline(blocks=("behavior", "demographics", "text"), embedder=HashingEmbedder(32)),
        KMeansSegmenter(n_segments=4, random_state=0),
    ).fit(data)
    labels = pipe.segmentation_.labels
    genre = np.arange(data.n_items) % 4
    hist = [[f"i{i}" for i in np.flatnonzero(genre == g)[:4]] for g in range(4)]
    new = pipe.assign_new(NewUsers([f"n{g}" for g in range(4)], histories=hist))
    for g in range(4):  # the segment where most planted-g users sit
        assert new[g] == np.bincount(labels[truth == g]).argmax()
    attrs = pd.DataFrame({"age": [20, 46], "gender": ["M", "F"]})
    only_attrs = pipe.assign_new(NewUsers(["a", "b"], attributes=attrs))
    assert only_attrs.shape == (2,) and set(only_attrs) <= set(range(4))
    assert np.array_equal(pipe.assign(data), labels)


def test_segment_interactions_one_call(planted):
    data, truth, _ = planted
    seg = segment_interactions(data, method="kmeans", n_segments="auto", embedder=HashingEmbedder(32))
    assert seg.n_segments == 4 and ari(truth, seg.labels) >= 0.9
    summary = seg.summary()
    assert summary["method"] == "kmeans" and sum(summary["sizes"]) == data.n_users
    auto = segment_interactions(data, method="auto", n_segments=4, embedder=HashingEmbedder(32))
    assert ari(truth, auto.labels) >= 0.9 and "method_selection" in auto.extra
    tiers = segment_interactions(data, method="tiers", text=False)
    assert tiers.method == "tiers" and tiers.names is not None


def test_automatic_k_is_chosen_on_a_sample_of_a_large_user_base():
    from segrec.segment import KMeansSegmenter

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, (3, 4))
    x = (centers[rng.integers(0, 3, 600)] + rng.normal(0, 1, (600, 4))).astype(np.float32)
    full = KMeansSegmenter(n_segments="auto", k_candidates=(2, 3, 4), random_state=0).fit(x)
    sampled = KMeansSegmenter(n_segments="auto", k_candidates=(2, 3, 4), k_selection_sample=200,
                              random_state=0).fit(x)
    assert full.n_segments_ == sampled.n_segments_ == 3
    assert len(sampled.labels_) == 600  # the chosen K is fitted on every user
    assert (sampled.k_selection_.table["max_size"] <= 200).all()  # candidates saw the sample only
