"""Routing policies, new-user assignment, the Router request path and run manifests (issue 5)."""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from segrec.artifacts import load_run, save_run
from segrec.config import load_config
from segrec.errors import ConfigError, SegrecError, UnknownIDError
from segrec.experiment import RunResult
from segrec.models import EASERecommender, PerSegmentRecommender, PopularityRecommender
from segrec.route import (
    RulesConfig,
    SegmentedRecommender,
    choose_accuracy,
    choose_budget,
    choose_rules,
    routing_summary,
)
from segrec.route.policy import best_tier_cost, segment_activity
from segrec.route.router import Router
from segrec.segment import SegmentationPipeline
from segrec.split import temporal_split
from segrec.types import Interactions, Vocabulary


# ------------------------------------------------------------------ policies
def _table(rows):
    return pd.DataFrame(rows, columns=["segment", "tier", "users", "ndcg@10", "flops"])


TABLE = _table([
    (0, "big", 50, 0.30, 100.0), (0, "small", 50, 0.29, 10.0), (0, "pop", 50, 0.10, 1.0),
    (1, "big", 30, 0.40, 200.0), (1, "small", 30, 0.20, 10.0), (1, "pop", 30, 0.05, 1.0),
    (2, "big", 20, 0.20, 50.0), (2, "small", 20, np.nan, np.nan), (2, "pop", 20, 0.15, 1.0),
])


def _brute_force(table, budget):
    segs = sorted(table["segment"].unique())
    options = {s: table[(table.segment == s) & table["ndcg@10"].notna()]["tier"].tolist() for s in segs}
    best, best_value = None, -1.0
    for combo in itertools.product(*(options[s] for s in segs)):
        routing = dict(zip(segs, combo, strict=True))
        summary = routing_summary(table, routing)
        if summary["flops"] <= budget + 1e-9 and summary["ndcg@10"] > best_value + 1e-12:
            best, best_value = routing, summary["ndcg@10"]
    return best


def test_accuracy_policy_picks_the_best_tier_per_segment():
    assert choose_accuracy(TABLE, default="big") == {0: "big", 1: "big", 2: "big"}
    # small loses 0.01 to big in segment 0: within min_gain, the default is kept
    assert choose_accuracy(TABLE, min_gain=0.05, default="small")[0] == "small"


@pytest.mark.parametrize("budget", [1.0, 5.0, 10.0, 40.0, 75.0, 120.0, 1e9])
def test_budget_policy_is_the_exact_knapsack_optimum(budget):
    routing = choose_budget(TABLE, budget, default="big")
    assert routing == _brute_force(TABLE, budget)
    assert routing_summary(TABLE, routing)["flops"] <= budget + 1e-9
    assert routing[2] != "small"  # a tier without a validation score is never chosen


def test_budget_policy_matches_brute_force_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(8):
        rows = [(s, t, int(rng.integers(1, 100)), float(rng.random()), float(rng.integers(1, 100)))
                for s in range(4) for t in ("a", "b", "c")]
        table = _table(rows)
        sizes = table.groupby("segment")["users"].transform("first")  # one size per segment
        table["users"] = sizes
        budget = float(rng.uniform(1, 100))
        got = choose_budget(table, budget)
        want = _brute_force(table, budget)
        if want is None:  # infeasible: the cheapest routing is served
            assert routing_summary(table, got)["flops"] == pytest.approx(
                sum(table[table.segment == s]["flops"].min() * table[table.segment == s]["users"].iloc[0]
                    for s in range(4)) / table.groupby("segment")["users"].first().sum())
        else:
            want_ndcg = routing_summary(table, want)["ndcg@10"]
            assert routing_summary(table, got)["ndcg@10"] == pytest.approx(want_ndcg)


def test_budget_policy_rejects_bad_budgets_and_missing_costs():
    with pytest.raises(ConfigError, match="budget"):
        choose_budget(TABLE, -1.0)
    with pytest.raises(ConfigError, match="flops"):
        choose_budget(TABLE.drop(columns="flops"), 10.0)


def test_rules_policy_routes_by_activity_with_overrides():
    segments = np.array([0] * 10 + [1] * 10 + [2] * 10)
    lengths = np.r_[np.full(10, 2.0), np.full(10, 20.0), np.full(10, 200.0)]
    act = segment_activity(segments, lengths)
    rules = RulesConfig(activity={"light": "pop", "medium": "small", "heavy": "big"})
    assert choose_rules(act, rules) == {0: "pop", 1: "small", 2: "big"}
    rules = RulesConfig(activity={"light": "pop", "medium": "small", "heavy": "big"}, segments={2: "small"})
    assert choose_rules(act, rules)[2] == "small"
    # a tier that was not fitted falls back to the default
    assert choose_rules(act, rules, available={"big", "small"}, default="big")[0] == "big"


# ------------------------------------------------------------- tiny system
def _two_tastes(n_per_group=30, n_items=40):
    """Two groups with disjoint item halves, cyclic orders and a gender that follows the group."""
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    half = n_items // 2
    for g in range(2):
        for u in range(n_per_group):
            seq = (rng.integers(half) + np.arange(4 + u % 9)) % half + g * half
            users += [g * n_per_group + u] * len(seq)
            items += seq.tolist()
            ts += list(range(len(seq)))
    n_users = 2 * n_per_group
    user_table = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)],
                               "gender": np.repeat(["F", "M"], n_per_group),
                               "age": rng.integers(18, 60, n_users),
                               "zip": [f"z{i}" for i in range(n_users)]})  # unique: no signal
    item_table = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                               "title": [f"Title {i}" for i in range(n_items)],
                               "categories": ["A" if i < half else "B" for i in range(n_items)]})
    data = Interactions.from_arrays(users, items, timestamps=ts,
                                    user_vocab=Vocabulary([f"u{i}" for i in range(n_users)]),
                                    item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
                                    user_table=user_table, item_table=item_table)
    return data, np.repeat([0, 1], n_per_group)


@pytest.fixture(scope="module")
def system():
    data, labels = _two_tastes()
    split = temporal_split(data)
    seg = SegmentedRecommender(
        segmenter=SegmentationPipeline.build("kmeans", n_segments=2, text=False, random_state=0),
        tiers={"global": EASERecommender(reg=10.0),
               "local": PerSegmentRecommender(base="ease", base_params={"reg": 10.0}, min_segment_users=5),
               "popularity": PopularityRecommender()})
    seg.fit(split.train, valid=split.valid)
    # the composite's own segmenter recovers the two planted groups
    np.testing.assert_array_equal(seg.segments_, labels)
    return data, split, labels, seg


def test_validation_table_carries_costs_and_reroute_shares_tiers(system):
    data, split, labels, seg = system
    assert {"flops", "ndcg@10", "users"} <= set(seg.validation_.columns)
    cheap = seg.reroute(policy="budget", budget_fraction=0.2)
    assert cheap.tiers_ is seg.tiers_
    _, best_flops = best_tier_cost(seg.validation_)
    assert routing_summary(seg.validation_, cheap.routing_)["flops"] <= 0.2 * best_flops + 1e-9
    # a budget below even popularity's cost serves the cheapest routing rather than nothing
    starved = seg.reroute(policy="budget", budget_flops=1.0)
    assert set(starved.routing_.values()) == {"popularity"}
    assert seg.routing_ == choose_accuracy(seg.validation_, default="global")  # original untouched
    with pytest.raises(ConfigError, match="budget_flops or budget_fraction"):
        seg.reroute(policy="budget")
    ruled = seg.reroute(policy="rules", rules={"activity": {"light": "popularity", "medium": "popularity",
                                                            "heavy": "popularity"}, "new_users": "local"})
    assert set(ruled.routing_.values()) == {"popularity"} and ruled.new_user_tier(0) == "local"


def test_the_segmenter_places_new_users_by_items_and_attributes(system, tmp_path):
    data, split, labels, seg = system
    histories = [split.fit.history(u) for u in range(data.n_users)]
    segments, _, evidence = seg.place(histories)
    # a fit user's items alone (no tenure, no attributes) land them in their own segment
    assert (segments == labels).mean() >= 0.9 and set(evidence) == {"items"}
    by_attr = seg.place([np.empty(0, np.int64)] * 3,
                        [{"gender": "F"}, {"gender": "M", "zip": "z1"}, {"gender": "X"}])
    assert by_attr[0].tolist() == [0, 1, -1]  # unseen value 'X' carries no evidence
    names = seg.attribute_names
    assert "zip" in names and "user_id" not in names
    with pytest.raises(ConfigError, match=r"unknown attribute\(s\) \['height'\]"):
        seg.check_attributes({"height": 3})
    with pytest.raises(ConfigError, match="'age' must be a number"):
        seg.check_attributes({"age": "old"})
    # the fitted pipeline saves as arrays + JSON and places users identically after loading
    seg.segmenter_.save_into(tmp_path)
    again = SegmentationPipeline.load(tmp_path)
    ids = [data.item_vocab.id(h).tolist() for h in histories]
    np.testing.assert_array_equal(again.place(ids).segments, seg.segmenter_.place(ids).segments)
    both = again.place([["i25", "i26"]], [{"gender": "M"}])
    assert both.segments.tolist() == [1] and both.evidence.tolist() == ["items+attributes"]


def test_router_request_paths(system):
    data, split, labels, seg = system
    router = Router(seg, titles=np.array([f"Title {i}" for i in range(data.n_items)], dtype=object))
    known = router.recommend(user_id="u0", k=5)
    assert known.segment == 0 and known.tier == seg.routing_[0] and not known.fallback and not known.new_user
    assert not set(known.item_ids) & set(data.item_vocab.id(split.fit.history(0)))
    assert known.titles[0] == f"Title {known.item_ids[0][1:]}"
    by_items = router.recommend(recent_items=["i25", "i26", "nope"], k=3, exclude=["i27"])
    assert by_items.segment == 1 and by_items.new_user and by_items.unknown_items == ["nope"]
    assert by_items.tier == seg.new_user_tier(1) and "i27" not in by_items.item_ids
    assert all(int(i[1:]) >= 20 for i in by_items.item_ids)  # group-1 items for a group-1 user
    by_attrs = router.recommend(user_id="brand-new", attributes={"gender": "F"}, k=3)
    assert by_attrs.segment == 0 and by_attrs.tier == "segment_popularity" and by_attrs.fallback
    assert all(int(i[1:]) < 20 for i in by_attrs.item_ids)
    unknown = router.recommend(user_id="nobody", k=3)
    assert unknown.tier == "popularity" and unknown.fallback and unknown.segment is None
    assert "unknown user" in unknown.reason
    everything = router.recommend(user_id="u0", k=10_000)
    assert len(everything.item_ids) == data.n_items - len(set(split.fit.history(0)))
    with pytest.raises(UnknownIDError, match="unknown user id 'nobody'"):
        router.user_segment("nobody")
    assert router.user_segment("u31") == (1, seg.routing_[1])
    recs, fallback = router.recommend_batch(["u0", "nobody", "u31"], k=4)
    assert fallback.tolist() == [False, True, False] and recs.tier[1] == "popularity"
    assert recs.item_ids.shape == (3, 4)
    profiles = router.segment_profiles(item_table=data.item_table)
    assert [p["segment"] for p in profiles] == [0, 1]
    assert profiles[0]["top_categories"][0]["category"] == "A" and "validation_ndcg@10" in profiles[0]


# ---------------------------------------------------------- run artifacts
def test_run_manifest_checksums_are_verified(system, tmp_path):
    data, split, labels, seg = system
    result = RunResult(load_config(None), data, split, labels, {"method": "planted"},
                       systems={"segmented": seg, "popularity": seg.tiers_["popularity"]},
                       segmenter=seg.segmenter_)
    out = save_run(result, tmp_path / "run")
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"versions", "config", "data_fingerprint", "metrics", "costs", "files"} <= set(manifest)
    assert {"systems/segmented/tensors.safetensors", "systems/segmented/segmenter/pipeline.json",
            "segmenter/pipeline.safetensors"} <= set(manifest["files"])
    costs = manifest["costs"]
    assert costs["segmented"]["flops_per_request"] > costs["popularity"]["flops_per_request"]
    router = load_run(out).router()
    assert router.recommend(user_id="u0", k=3).tier == seg.routing_[0]
    # a plain system is served as a one-tier composite, new users placed by the run's segmenter
    plain = load_run(out).router("popularity").recommend(recent_items=["i25", "i26"], k=3)
    assert plain.segment == 1 and plain.tier == "popularity" and not plain.fallback
    # flip one byte of a saved tensor: loading names the file and refuses
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    target = bad / "systems/popularity/tensors.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(SegrecError, match="checksum mismatch for systems/popularity/tensors.safetensors"):
        load_run(bad)
    (bad / "segments.parquet").unlink()
    with pytest.raises(SegrecError, match="segments.parquet listed in manifest.json is missing"):
        load_run(bad)


def test_single_row_top_k_matches_the_batch_ranking():
    from segrec.evaluate.ranking import top_k
    from segrec.route.router import top_k_row

    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        row = rng.integers(0, 4, n).astype(np.float32)  # many ties
        row[rng.random(n) < 0.2] = -np.inf  # excluded items
        k = int(rng.integers(1, 40))
        items, _ = top_k(row[None].copy(), k)
        assert top_k_row(row, k).tolist() == items[0][items[0] >= 0].tolist()


def test_single_user_scores_equal_score_dense_bitwise(system):
    _, _, _, seg = system
    for tier, model in seg.tiers_.items():  # EASE, local EASE and popularity have a fast path
        for u in range(len(seg.segments_)):
            assert np.array_equal(np.asarray(model.score_one(u), np.float32),
                                  model.score_dense(np.array([u]))[0]), (tier, u)
    for u in range(len(seg.segments_)):
        row, tier = seg.score_one_served(u)
        scores, served = seg.score_served(np.array([u]))
        assert np.array_equal(row, scores[0]) and tier == served[0]


def test_new_users_reach_a_sequential_tier_through_its_sequence_input(system):
    from segrec.models.transformer import TransformerRecommender

    data, split, labels, seg = system
    model = TransformerRecommender(embedding_size=8, n_heads=1, n_layers=1, max_len=8, epochs=1,
                                   early_stopping=False, batch_size=32).fit(split.train)
    histories = [np.array([25, 26, 27]), np.array([], np.int64)]
    scores = model.score_histories(histories, np.array([1, 0]))
    # float32 scoring in two batch shapes: equal up to rounding
    np.testing.assert_allclose(scores[0], model.score_histories([[25, 26, 27]])[0], rtol=1e-5, atol=1e-6)
    assert np.isnan(scores[1]).all()  # nothing to condition on: the router falls back
    # item rows are converted to the sequence input the model declares
    rows = model.score_histories(split.fit.to_csr()[:2])
    np.testing.assert_allclose(rows[0], model.score_histories([sorted(split.fit.history(0))])[0],
                               rtol=1e-5, atol=1e-6)
    router = Router(SegmentedRecommender.serving(model, segments=labels, segmenter=seg.segmenter_))
    served = router.recommend(recent_items=["i25", "i26", "i27"], k=3)
    assert served.tier == "transformer" and not served.fallback and served.segment == 1
    assert router.recommend(attributes={"gender": "M"}, k=3).tier == "segment_popularity"


def test_cli_rules_flag_parses_into_a_rules_config():
    from segrec.cli.serve import parse_rules

    rules = parse_rules("heavy=global, light=local,new=popularity,3=global")
    cfg = RulesConfig(**rules)
    assert cfg.activity == {"heavy": "global", "light": "local"} and cfg.segments == {3: "global"}
    assert cfg.new_users == "popularity"
    with pytest.raises(SegrecError, match="unknown key 'huge'"):
        parse_rules("huge=global")
    with pytest.raises(SegrecError, match="is not KEY=TIER"):
        parse_rules("heavy")


def test_heavy_requests_are_those_a_costly_tier_may_serve(system, monkeypatch):
    data, split, labels, seg = system
    # make the global tier look like a Transformer (far over HEAVY_FLOPS), the rest stay cheap
    from segrec.route import router as router_mod

    monkeypatch.setattr(seg.tiers_["global"], "flops_per_request",
                        lambda n_history=None, segments=None: 10 * router_mod.HEAVY_FLOPS)
    routed = seg.reroute(routing={0: "global", 1: "local"})
    router = Router(routed)
    assert router._heavy["global"] and not router._heavy["local"] and not router._heavy["popularity"]
    assert router.heavy("u0", False)                 # segment 0 -> the heavy global tier
    assert not router.heavy("u31", False)            # segment 1 -> the local tier
    assert router.heavy("brand-new", True)           # new user with items: may land on "global"
    assert not router.heavy("brand-new", False)      # nothing to score: popularity
    assert not router.heavy(None, False)
