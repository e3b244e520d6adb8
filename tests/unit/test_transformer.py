import numpy as np
import pytest

from segrec import Interactions, NotFittedError, Vocabulary, temporal_split
from segrec.errors import ConfigError
from segrec.evaluate import evaluate
from segrec.models import FitContext, Recommender
from segrec.models.transformer import TransformerRecommender


def build(histories, n_items):
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    items = np.concatenate([np.asarray(h) for h in histories])
    ts = np.concatenate([np.arange(len(h)) for h in histories])
    return Interactions.from_arrays(
        users, items, timestamps=ts,
        user_vocab=Vocabulary([f"u{u}" for u in range(len(histories))]),
        item_vocab=Vocabulary([f"i{i}" for i in range(n_items)]),
    )


def cyclic_split(n_users=60, n_items=20, length=10, seed=0):
    """Item i is always followed by item i + 1 (mod n_items); test = each user's last item."""
    starts = np.random.default_rng(seed).integers(0, n_items, n_users)
    return temporal_split(build([[int((s + t) % n_items) for t in range(length)] for s in starts], n_items))


TINY = dict(embedding_size=16, n_layers=1, n_heads=2, max_len=12, dropout=0.0, batch_size=16,
            learning_rate=1e-2, epochs=30, early_stopping=False, n_threads=1,
            target_window=1)


@pytest.fixture(scope="module")
def split():
    return cyclic_split()


@pytest.fixture(scope="module")
def fitted(split):
    return TransformerRecommender(**TINY).fit(split.train, valid=split.valid)


def test_learns_next_item_pattern(split, fitted):
    report = evaluate(fitted, split, ks=(1, 10))
    assert report.overall["recall@1"] >= 0.95


def test_fit_returns_self(split):
    model = TransformerRecommender(**{**TINY, "epochs": 1})
    assert model.fit(split.train) is model


def test_not_fitted_raises():
    model = TransformerRecommender(**TINY)
    with pytest.raises(NotFittedError):
        model.recommend(["u0"])
    with pytest.raises(NotFittedError):
        model.score_histories([[1, 2]])


def test_batch_equals_single(fitted):
    users = ["u3", "u7", "u11"]
    batch = fitted.recommend(users, k=5)
    for i, u in enumerate(users):
        single = fitted.recommend(u, k=5)
        assert list(single.item_ids[0]) == list(batch.item_ids[i])
        np.testing.assert_allclose(single.scores[0], batch.scores[i], rtol=1e-5, atol=1e-5)


def test_save_load_identical(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, TransformerRecommender)
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.score_dense(users), fitted.score_dense(users))
    assert loaded.best_epoch_ == fitted.best_epoch_


def test_same_seed_same_model(split):
    cfg = {**TINY, "epochs": 3, "dropout": 0.1}
    a = TransformerRecommender(**cfg).fit(split.train)
    b = TransformerRecommender(**cfg).fit(split.train)
    for (k, va), vb in zip(a._state().items(), b._state().values(), strict=True):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    c = TransformerRecommender(**{**cfg, "random_state": 1}).fit(split.train)
    assert not np.array_equal(a._state()["net.wte.weight"], c._state()["net.wte.weight"])


def test_score_histories_new_user(fitted):
    idx = fitted.item_vocab_.index(["i3", "i4", "i5"])
    scores = fitted.score_histories([idx, []])
    assert scores.shape == (2, 20)
    assert fitted.item_vocab_.id(scores[0].argmax()) == "i6"
    assert np.isnan(scores[1]).all()  # nothing to condition on: caller falls back
    with pytest.raises(ConfigError, match="item indices"):
        fitted.score_histories([[99]])


def test_early_stopping_and_refit(split):
    cfg = {**TINY, "early_stopping": True, "epochs": 6, "patience": 2}
    model = TransformerRecommender(**cfg).fit(split.train, valid=split.valid)
    assert 1 <= model.best_epoch_ <= 6
    assert model.curve_[0]["epoch"] == 0 and "ndcg@10" in model.curve_[-1]
    assert model.inner_params_ is not None
    no_refit = TransformerRecommender(**{**cfg, "refit": False}).fit(split.train, valid=split.valid)
    # without refit the scoring history still includes the valid items
    np.testing.assert_array_equal(no_refit.histories_.lengths, np.minimum(split.fit.user_counts(), 12))


def test_text_init(split):
    emb = np.random.default_rng(0).normal(size=(20, 8))
    model = TransformerRecommender(**{**TINY, "epochs": 1, "item_init": "text"})
    model.fit(split.train, context=FitContext(item_embeddings=emb))
    assert np.isfinite(model.score_dense(np.arange(3))).all()
    with pytest.raises(ConfigError, match="item embeddings"):
        TransformerRecommender(**{**TINY, "item_init": "text"}).fit(split.train)


def test_bad_heads():
    with pytest.raises(ConfigError, match="divisible"):
        TransformerRecommender(embedding_size=10, n_heads=3)


def test_mask_seen_keeps_targets():
    import torch

    from segrec.models._seqtrain import mask_seen, multi_target_ce

    inputs = torch.tensor([[1, 2, 3, 5], [0, 0, 2, 5]])  # pad id = 5 = n_items
    targets = torch.tensor([[2, 3, -1, -1], [0, 2, 1, -1]])[..., None]
    keep = targets[..., 0] >= 0
    masked = mask_seen(torch.zeros(int(keep.sum()), 5), inputs, keep, targets[keep])
    expected = [[1], [1, 2], [], [0], [0, 2]]  # items seen so far, minus a repeated target
    for row, seen in zip(masked, expected, strict=True):
        assert torch.isinf(row).nonzero().view(-1).tolist() == seen
    # several targets per position, some absent: finite loss (regression: -inf * 0 = NaN)
    wide = torch.tensor([[[2, 3], [3, -1], [-1, -1], [-1, -1]], [[0, 2], [2, 1], [1, -1], [-1, -1]]])
    keep = wide[..., 0] >= 0
    logits = mask_seen(torch.zeros(int(keep.sum()), 5), inputs, keep, wide[keep])
    assert torch.isfinite(multi_target_ce(logits, wide[keep]))


def test_exclude_seen_and_target_window_learn(split):
    model = TransformerRecommender(**{**TINY, "exclude_seen": True, "target_window": 2})
    model.fit(split.train, valid=split.valid)
    assert evaluate(model, split, ks=(1, 10)).overall["recall@1"] >= 0.95


def test_kl_term_has_finite_gradients_with_masked_items():
    import torch

    from segrec.models._seqtrain import multi_target_ce

    logits = torch.randn(3, 6, requires_grad=True)
    ref = torch.randn(3, 6)
    masked = logits.masked_fill(torch.tensor([[True, False, False, False, False, False]] * 3), float("-inf"))
    ref = ref.masked_fill(torch.isinf(masked.detach()), float("-inf"))
    loss = multi_target_ce(masked, torch.tensor([[1], [2], [3]]), ref, kl_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the KL term is zero when the two distributions agree
    same = multi_target_ce(masked, torch.tensor([[1], [2], [3]]), masked.detach(), kl_weight=5.0)
    plain = multi_target_ce(masked, torch.tensor([[1], [2], [3]]))
    assert torch.allclose(same, plain, atol=1e-6)


def test_weight_averaging(split):
    cfg = {**TINY, "ema_decay": 0.9}
    a = TransformerRecommender(**cfg).fit(split.train, valid=split.valid)
    b = TransformerRecommender(**cfg).fit(split.train, valid=split.valid)
    np.testing.assert_array_equal(a._state()["net.wte.weight"], b._state()["net.wte.weight"])
    plain = TransformerRecommender(**TINY).fit(split.train, valid=split.valid)
    assert not np.array_equal(a._state()["net.wte.weight"], plain._state()["net.wte.weight"])
    assert evaluate(a, split, ks=(1, 10)).overall["recall@1"] >= 0.9


def test_run_starts_the_transformer_from_item_texts(monkeypatch):
    """[models.transformer] item_init = "text": the run embeds the items table's texts for it."""
    import warnings

    from segrec.config import load_config
    from segrec.experiment import run_experiment
    from segrec.features import text as text_mod
    from segrec.testing import random_interactions

    monkeypatch.setattr(text_mod, "SentenceTransformerEmbedder", lambda: text_mod.HashingEmbedder(dim=24))
    tiny = {"item_init": "text", "embedding_size": 8, "epochs": 1, "early_stopping": False, "n_threads": 1}
    cfg = load_config(None, data={"synthetic_users": 60, "synthetic_items": 40, "synthetic_segments": 2},
                      segmentation={"text": False, "n_segments": 2},
                      models={"systems": ("transformer",), "transformer": tiny})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg)
        model = result.systems["transformer"]
        texts = text_mod.item_texts(result.data.item_table, result.data.n_items)
        assert np.array_equal(model._item_init, text_mod.HashingEmbedder(dim=24).encode(texts))
        with pytest.raises(ConfigError, match="needs an items table"):
            run_experiment(cfg, data=random_interactions())


def test_run_turns_on_epoch_bars_unless_the_config_says_otherwise(capsys):
    import warnings

    from segrec.config import load_config
    from segrec.experiment import run_experiment

    tiny = {"embedding_size": 8, "epochs": 2, "n_threads": 1}
    over = {"data": {"synthetic_users": 60, "synthetic_items": 40, "synthetic_segments": 2},
            "segmentation": {"text": False, "n_segments": 2}, "split": {"no_split": True}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(None, **over, models={"systems": ("transformer",), "transformer": tiny})
        on = run_experiment(cfg, bars=True)
        assert on.systems["transformer"].config.show_progress
        assert "transformer" in capsys.readouterr().err  # tqdm's bar, labelled with the model
        off = run_experiment(load_config(None, **over, models={
            "systems": ("transformer",), "transformer": {**tiny, "show_progress": False}}), bars=True)
        assert not off.systems["transformer"].config.show_progress
