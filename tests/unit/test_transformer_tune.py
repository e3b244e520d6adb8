"""The Transformer's budgeted choice of dropout / item init on the inner split (``"auto"``)."""

import numpy as np
import pytest
from test_transformer import TINY, cyclic_split, hashed_text_run  # the cyclic data of the Transformer tests

from segrec.models import FitContext, Recommender
from segrec.models._transformer_tune import tune_candidates
from segrec.models.transformer import TransformerConfig, TransformerRecommender

#: early stopping on; a first candidate that cannot learn the pattern, a second that can
AUTO = {**TINY, "early_stopping": True, "epochs": 12, "patience": 3, "dropout": "auto",
        "auto_dropouts": (0.9, 0.0), "item_init": "random", "tune_budget_s": 1e6}


@pytest.fixture(scope="module")
def split():
    return cyclic_split()


@pytest.fixture(scope="module")
def tuned(split):
    return TransformerRecommender(**AUTO).fit(split.train, valid=split.valid)


def test_choice_is_the_best_inner_valid_score(tuned):
    record = tuned.tuned_
    assert record["path"] == "grid"
    scores = [row["ndcg@10"] for row in record["tried"]]
    assert [row["dropout"] for row in record["tried"]] == [0.9, 0.0]
    assert record["chosen"]["dropout"] == record["tried"][int(np.argmax(scores))]["dropout"] == 0.0
    assert tuned.inner_score_ == max(scores)


def test_refit_inner_model_and_adapters_see_the_chosen_setting(tuned):
    # the refit built its net with the winner's dropout; the router's inner model is the winner's
    assert tuned.net_.config.dropout == 0.0
    inner = tuned.inner_model()
    assert inner.net_.config.dropout == 0.0
    for name, value in tuned.inner_params_.items():
        np.testing.assert_array_equal(inner.net_.state_dict()[name].numpy(), value.numpy())


def test_budget_zero_trains_only_the_first_candidate(split):
    model = TransformerRecommender(**{**AUTO, "tune_budget_s": 0.0}).fit(split.train, valid=split.valid)
    assert model.tuned_["path"] == "over budget"
    assert len(model.tuned_["tried"]) == 1
    assert model.tuned_["chosen"]["dropout"] == 0.9 == model.net_.config.dropout


def test_fixed_settings_take_no_choice(split):
    model = TransformerRecommender(**{**AUTO, "dropout": 0.1}).fit(split.train, valid=split.valid)
    assert model.tuned_["path"] == "fixed" and model.net_.config.dropout == 0.1
    plain = TransformerRecommender(**{**TINY, "dropout": "auto", "epochs": 2}).fit(split.train)
    assert plain.tuned_["path"] == "no early stopping"
    assert plain.net_.config.dropout == TransformerConfig().auto_dropouts[0]


def test_text_init_is_a_candidate_only_with_item_embeddings(split):
    cfg = TransformerConfig(dropout=0.2, item_init="auto")
    assert tune_candidates(cfg, has_text=False) == [{"dropout": 0.2, "item_init": "random"}]
    assert [c["item_init"] for c in tune_candidates(cfg, has_text=True)] == ["random", "text"]
    emb = np.random.default_rng(0).normal(size=(20, 8))
    model = TransformerRecommender(**{**AUTO, "dropout": 0.0, "item_init": "auto", "epochs": 3})
    model.fit(split.train, valid=split.valid, context=FitContext(item_embeddings=emb))
    assert [row["item_init"] for row in model.tuned_["tried"]] == ["random", "text"]


def test_choice_round_trips_through_save_load(tuned, tmp_path):
    tuned.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.tuned_ == tuned.tuned_
    assert loaded.net_.config.dropout == tuned.net_.config.dropout
    users = np.arange(5)
    np.testing.assert_allclose(loaded.score_dense(users), tuned.score_dense(users), rtol=1e-5, atol=1e-6)


def test_composite_passes_the_segmentations_text_embeddings(monkeypatch):
    """``item_init="auto"`` in a run: the text block's item embeddings, computed once, reach the model."""
    tiny = {"embedding_size": 8, "epochs": 2, "patience": 1, "n_threads": 1, "item_init": "auto",
            "tune_budget_s": 1e6}
    _, result, expected = hashed_text_run(monkeypatch, tiny, segmentation_text=True)
    model = result.systems["transformer"]
    assert np.array_equal(model._item_init, expected)
    assert {row["item_init"] for row in model.tuned_["tried"]} == {"random", "text"}


class _Result:
    def __init__(self, per_user):
        self.per_user = np.asarray(per_user, float)
        self.best_score, self.best_epoch = float(self.per_user.mean()), 1


def _choose(per_user_by_dropout, min_se, budget_s=1e6):
    from segrec.models._transformer_tune import choose_setting

    candidates = [{"dropout": d, "item_init": "random"} for d in per_user_by_dropout]

    def train_one(setting):
        result = _Result(per_user_by_dropout[setting["dropout"]])
        return result, result  # the "net" is the result here: per_user reads its scores

    return choose_setting(train_one, candidates, budget_s, "t", per_user=lambda net: net.per_user,
                          min_se=min_se)[2]


def test_a_gain_within_noise_keeps_the_first_candidate():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    noisy = base + rng.normal(0.0, 0.2, 400)  # a higher mean by chance, far under 1 SE's worth of signal
    noisy += 0.001 - (noisy - base).mean()
    clear = base + 0.05
    assert _choose({0.2: base, 0.5: noisy}, min_se=1.0)["chosen"]["dropout"] == 0.2
    assert _choose({0.2: base, 0.5: noisy}, min_se=0.0)["chosen"]["dropout"] == 0.5
    record = _choose({0.2: base, 0.5: noisy, 0.35: clear}, min_se=1.0)
    assert record["chosen"]["dropout"] == 0.35 and record["path"] == "grid"
    assert record["tried"][2]["gain"] == pytest.approx(0.05)
