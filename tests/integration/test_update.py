"""``segrec update``: known users' new interactions reach a saved run's histories and cached vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segrec.artifacts import load_run, save_run
from segrec.cli import main
from segrec.config import load_config
from segrec.experiment import RunResult
from segrec.models import FitContext
from segrec.models.baselines import EASERecommender, PopularityRecommender
from segrec.models.mf import ALSRecommender
from segrec.models.transformer import TransformerRecommender
from segrec.route import SegmentedRecommender
from segrec.testing import planted_split


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    split = planted_split()
    data = split.train.concat(split.valid)
    systems = {
        "transformer": TransformerRecommender(embedding_size=16, n_heads=1, n_layers=1, max_len=6, epochs=2,
                                              early_stopping=False, n_threads=1).fit(data),
        "ease": EASERecommender(reg=10.0).fit(data),
        "als": ALSRecommender(embedding_size=8, reg=1.0, backend="numpy").fit(data),
        "segmented": SegmentedRecommender(
            tiers={"global": TransformerRecommender(embedding_size=8, n_heads=1, n_layers=1, max_len=6,
                                                    epochs=1, early_stopping=False, n_threads=1),
                   "popularity": PopularityRecommender()}, routing={0: "global"}).fit(
            data, context=FitContext(segments=np.zeros(data.n_users, np.int64))),
    }
    run = save_run(RunResult(load_config(None), data, None, np.zeros(data.n_users, np.int64),
                             {"method": "none"}, systems=systems), tmp_path_factory.mktemp("run") / "run")
    return run, data


def _events(tmp_path, rows, name="events.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)
    return path


def test_update_appends_histories_and_recomputes_only_those_vectors(saved, tmp_path):
    run, data = saved
    before = load_run(run)
    g0 = before.system("transformer")
    user = str(data.user_vocab.ids[0])
    fit_items = set(data.item_vocab.ids[g0.seen_.indices[g0.seen_.indptr[0]:g0.seen_.indptr[1]]])
    new = [str(i) for i in data.item_vocab.ids if str(i) not in fit_items][:2]
    events = _events(tmp_path, [(user, new[0], 10**9), (user, new[1], 10**9 + 1)])
    out = tmp_path / "updated"
    assert main(["update", str(run), "--events", str(events), "--out", str(out)]) == 0
    after = load_run(out)  # the manifest verifies: every rewritten file re-hashed
    assert after.manifest["updates"][-1]["events"] == 2 and after.manifest["updates"][-1]["users"] == 1
    g1 = after.system("transformer")
    # the sequence ends with the new items; the cached vector is the forward pass over it
    tail = g1.histories_.items[g1.histories_.indptr[0]:g1.histories_.indptr[1]]
    assert data.item_vocab.ids[tail[-2:]].tolist() == new
    np.testing.assert_allclose(g1.user_vectors_.vectors[0], g1.history_vectors([tail])[0][0],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(g1.user_vectors_.vectors[0], g0.user_vectors_.vectors[0])
    np.testing.assert_array_equal(g1.user_vectors_.vectors[1:], g0.user_vectors_.vectors[1:])
    # what every system serves: the new items are now seen (excluded) for that user only
    for name in ("transformer", "ease", "als", "segmented"):
        served = after.router(name).recommend(user_id=user, k=len(data.item_vocab))
        assert not set(new) & set(served.item_ids), name
    assert set(new) <= set(before.router("ease").recommend(user_id=user, k=len(data.item_vocab)).item_ids)
    als0, als1 = before.system("als"), after.system("als")
    assert not np.allclose(als0.user_factors_[0], als1.user_factors_[0])  # folded in again
    np.testing.assert_array_equal(als0.user_factors_[1:], als1.user_factors_[1:])
    tier = after.system("segmented").tiers_["global"]  # the composite's cached tier, updated in it
    assert data.item_vocab.ids[tier.histories_.items[tier.histories_.indptr[1] - 2:
                                                     tier.histories_.indptr[1]]].tolist() == new


@pytest.mark.parametrize("column, value, hint", [("user_id", "nobody", "recent_items"),
                                                  ("item_id", "no-such-item", "refit")])
def test_unknown_ids_are_one_line_naming_file_column_and_line(saved, tmp_path, capsys, column, value, hint):
    run, data = saved
    rows = [(str(data.user_vocab.ids[1]), str(data.item_vocab.ids[0]), 5),
            (str(data.user_vocab.ids[2]), str(data.item_vocab.ids[1]), 6)]
    rows[1] = (value, rows[1][1], 6) if column == "user_id" else (rows[1][0], value, 6)
    events = _events(tmp_path, rows)
    manifest = (run / "manifest.json").read_bytes()
    assert main(["update", str(run), "--events", str(events)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"column {column} (line 3)" in err and value in err and hint in err and str(events) in err
    assert (run / "manifest.json").read_bytes() == manifest  # nothing was written


def test_update_in_place_keeps_a_valid_run(saved, tmp_path):
    run, data = saved
    copy = tmp_path / "copy"
    assert main(["update", str(run), "--events",
                 str(_events(tmp_path, [(str(data.user_vocab.ids[3]), str(data.item_vocab.ids[2]), 7)])),
                 "--out", str(copy)]) == 0
    again = _events(tmp_path, [(str(data.user_vocab.ids[4]), str(data.item_vocab.ids[3]), 8)], "more.csv")
    assert main(["update", str(copy), "--events", str(again)]) == 0
    assert len(load_run(copy).manifest["updates"]) == 2


def test_update_reaches_per_segment_models_on_touched_items():
    """A restricted per-segment model maps new items to its sub-catalogue; scores stay the full model's."""
    from segrec.models import PerSegmentRecommender

    split = planted_split()
    labels = np.arange(split.train.n_users) % 3
    fitted = [PerSegmentRecommender(base="ease", base_params={"reg": 20.0}, min_segment_users=5,
                                    restrict_items=restrict).fit(split.train, valid=split.valid,
                                                                 context=FitContext(segments=labels))
              for restrict in (True, False)]
    restricted, plain = fitted
    sub = restricted.models_[0]
    users = np.flatnonzero(labels == 0)[:3]
    outside = np.setdiff1d(np.arange(split.train.n_items), sub.item_index_)
    seen0 = set(restricted.seen_[users[0]].indices)
    inside = [i for i in sub.item_index_ if i not in seen0][:2]
    new_users = np.array([users[0], users[0], users[1]])
    new_items = np.array([inside[0], inside[1], outside[0] if len(outside) else inside[0]])
    for model in fitted:
        assert set(model.add_interactions(new_users, new_items).tolist()) == {users[0], users[1]}
    local_seen = sub.item_index_[sub.inner_.seen_[users[0]].indices]  # the base's row, in catalogue ids
    assert {inside[0], inside[1]} <= set(local_seen.tolist())
    np.testing.assert_allclose(restricted.score_dense(users), plain.score_dense(users), rtol=1e-5, atol=1e-6)
    for u in users:
        np.testing.assert_allclose(restricted.score_one(int(u)), plain.score_one(int(u)),
                                   rtol=1e-5, atol=1e-6)
