import numpy as np
import pytest
import torch

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
            target_window=1, embedding_lr_scale=1.0, precision="fp32")


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

    from segrec.models._seqloss import mask_seen, multi_target_ce

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

    from segrec.models._seqloss import multi_target_ce

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


@pytest.mark.parametrize("sampled", [False, True])
def test_finite_mask_gives_the_masked_loss_and_gradient_with_the_fused_kl(sampled):
    """The adapters' MASKED fill + fused KL = the -inf mask + masked KL, value and gradient."""
    from segrec.models._seqloss import MASKED, multi_target_ce, output_logits

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 4, generator=gen, requires_grad=True)
    ref_hidden = torch.randn(5, 4, generator=gen)
    weight, bias = torch.randn(9, 4, generator=gen), torch.randn(9, generator=gen)
    targets = torch.tensor([[1, 2], [3, -1], [4, 4], [0, 5], [6, -1]])
    pairs = (torch.tensor([0, 1, 1, 3, 4]), torch.tensor([7, 0, 8, 2, 2]))
    negatives = torch.tensor([0, 2, 7, 8]) if sampled else None
    grads, losses = [], []
    for fill, masked in ((float("-inf"), True), (MASKED, False)):
        h = hidden.detach().clone().requires_grad_(True)
        logits, cols = output_logits(h, weight, bias, targets, pairs, negatives, fill=fill)
        ref, _ = output_logits(ref_hidden, weight, bias, targets, pairs, negatives, fill=fill)
        loss = multi_target_ce(logits, cols, ref, kl_weight=1.0, masked=masked)
        loss.backward()
        losses.append(loss.detach())
        grads.append(h.grad)
    assert torch.isfinite(losses[1]) and torch.isfinite(grads[1]).all()
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_weight_averaging(split):
    cfg = {**TINY, "ema_decay": 0.9}
    a = TransformerRecommender(**cfg).fit(split.train, valid=split.valid)
    b = TransformerRecommender(**cfg).fit(split.train, valid=split.valid)
    np.testing.assert_array_equal(a._state()["net.wte.weight"], b._state()["net.wte.weight"])
    plain = TransformerRecommender(**TINY).fit(split.train, valid=split.valid)
    assert not np.array_equal(a._state()["net.wte.weight"], plain._state()["net.wte.weight"])
    assert evaluate(a, split, ks=(1, 10)).overall["recall@1"] >= 0.9


def hashed_text_run(monkeypatch, transformer: dict, segmentation_text: bool):
    """A tiny built-in-data run of the Transformer alone, with hashed "text" embeddings.

    Returns:
        ``(config, result, expected)``: ``expected`` is the embeddings of the items' texts.
    """
    import warnings

    from segrec.config import load_config
    from segrec.experiment import run_experiment
    from segrec.features import text as text_mod

    monkeypatch.setattr(text_mod, "SentenceTransformerEmbedder", lambda: text_mod.HashingEmbedder(dim=24))
    cfg = load_config(None, data={"synthetic_users": 60, "synthetic_items": 40, "synthetic_segments": 2},
                      segmentation={"text": segmentation_text, "n_segments": 2},
                      models={"systems": ("transformer",), "transformer": transformer})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg)
    texts = text_mod.item_texts(result.data.item_table, result.data.n_items)
    return cfg, result, text_mod.HashingEmbedder(dim=24).encode(texts)


def test_run_starts_the_transformer_from_item_texts(monkeypatch):
    """[models.transformer] item_init = "text": the run embeds the items table's texts for it."""
    import warnings

    from segrec.experiment import run_experiment
    from segrec.testing import random_interactions

    tiny = {"item_init": "text", "embedding_size": 8, "epochs": 1, "early_stopping": False, "n_threads": 1}
    cfg, result, expected = hashed_text_run(monkeypatch, tiny, segmentation_text=False)
    assert np.array_equal(result.systems["transformer"]._item_init, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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


def _dense_mask_seen(logits, inputs, keep, targets):
    """The one-hot + cumsum formulation mask_seen had before (O(positions x catalogue))."""
    import torch

    b, t = inputs.shape
    n_items = logits.shape[1]
    onehot = torch.zeros(b, t, n_items + 1, dtype=torch.int32)
    onehot.scatter_(2, inputs[..., None], 1)
    seen = onehot.cumsum(1)[keep][:, :n_items] > 0
    is_target = torch.zeros_like(seen)
    rows, cols = torch.nonzero(targets >= 0, as_tuple=True)
    is_target[rows, targets[rows, cols]] = True
    return logits.masked_fill(seen & ~is_target, float("-inf"))


def _random_batch(seed, b=7, t=9, n_items=13, w=3):
    """Right-padded windows with repeats, and their next-w targets (-1 past each window's end)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    items = torch.randint(0, n_items, (b, t + w), generator=g)
    pos = torch.arange(t)
    valid = pos[None, :] < lengths[:, None]
    inputs = torch.where(valid, items[:, :t], n_items)
    tpos = (pos[None, :, None] + 1 + torch.arange(w)[None, None, :]).expand(b, t, w)
    stop = lengths[:, None, None] + torch.randint(0, w + 1, (b, 1, 1), generator=g)
    nxt = items.gather(1, tpos.reshape(b, -1)).reshape(b, t, w)
    targets = torch.where(valid[..., None] & (tpos < stop), nxt, -1)
    return inputs, targets


def test_mask_seen_from_indices_equals_the_dense_formulation():
    import torch

    from segrec.models._seqloss import mask_seen, multi_target_ce

    for seed in range(20):
        inputs, targets = _random_batch(seed)
        keep = targets[..., 0] >= 0
        logits = torch.randn(int(keep.sum()), 13, generator=torch.Generator().manual_seed(seed))
        new = mask_seen(logits, inputs, keep, targets[keep])
        old = _dense_mask_seen(logits, inputs, keep, targets[keep])
        assert torch.equal(new, old)
        assert torch.equal(multi_target_ce(new, targets[keep]), multi_target_ce(old, targets[keep]))


def test_sampled_softmax_over_every_item_is_the_exact_loss():
    """With all items as negatives the sampled logits are the full softmax, column-permuted."""
    import torch

    from segrec.models._seqloss import multi_target_ce, output_logits, seen_pairs

    for seed in range(10):
        inputs, targets = _random_batch(seed)
        keep = targets[..., 0] >= 0
        g = torch.Generator().manual_seed(seed)
        hidden = torch.randn(int(keep.sum()), 4, generator=g)
        weight, bias = torch.randn(13, 4, generator=g), torch.randn(13, generator=g)
        tg = targets[keep]
        pairs = seen_pairs(inputs, keep, tg)
        full = multi_target_ce(*output_logits(hidden, weight, bias, tg, pairs))
        every = torch.randperm(13, generator=g)
        sampled = multi_target_ce(*output_logits(hidden, weight, bias, tg, pairs, every))
        assert torch.allclose(full, sampled, atol=1e-5)
        # fewer negatives: a finite loss with gradients, and a different estimate
        few = output_logits(hidden.requires_grad_(), weight, bias, tg, pairs, every[:5])
        loss = multi_target_ce(*few)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(hidden.grad).all()


def test_token_batches_cover_every_training_pair_once_per_epoch():
    from segrec.models._seqdata import Histories, iter_batches, make_windows

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 8, 300), rng.integers(50, 400, 20)])
    hist = Histories.from_lists([rng.integers(0, 50, n) for n in lengths])
    windows = make_windows(hist, 64)
    assert windows.length.sum() == np.maximum(lengths - 1, 0).sum()  # one input position per pair
    for budget in (1, 100, 512, 4096):
        batches = list(iter_batches(windows, np.random.default_rng(1), tokens=budget))
        flat = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(flat), np.arange(len(windows)))
        for b in batches:  # within budget, unless one window alone is longer
            assert len(b) * windows.length[b].max() <= budget or len(b) == 1
    small = list(iter_batches(windows, np.random.default_rng(1), tokens=512))
    big = list(iter_batches(windows, np.random.default_rng(1), tokens=4096))
    assert len(big) < len(small)
    fixed = list(iter_batches(windows, np.random.default_rng(1), size=16))
    assert sorted(len(b) for b in fixed)[-1] == 16 and sum(map(len, fixed)) == len(windows)


def test_warm_started_refit_continues_from_the_early_stopped_weights(split, monkeypatch):
    import segrec.models.transformer as tr

    starts = []  # the weights each training run starts from, taken when the loop starts
    original = tr.run_loop

    def spy(params, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in params.items()})
        return original(params, *args, **kwargs)

    monkeypatch.setattr(tr, "run_loop", spy)
    cfg = {**TINY, "early_stopping": True, "epochs": 6, "patience": 2}
    warm = TransformerRecommender(**cfg, warm_fraction=0.01).fit(split.train, valid=split.valid)
    assert warm.refit_epochs_ == min(3, warm.best_epoch_) and len(warm.refit_curve_) == warm.refit_epochs_
    for k, v in warm.inner_params_.items():  # the refit started from the best epoch's weights
        assert torch.equal(starts[1][k], v)
    scratch = TransformerRecommender(**cfg, warm_start=False).fit(split.train, valid=split.valid)
    assert scratch.refit_epochs_ == scratch.best_epoch_
    assert torch.equal(starts[2]["wte.weight"], starts[3]["wte.weight"])  # scratch: a fresh init again
    assert evaluate(warm, split, ks=(1, 10)).overall["recall@1"] >= 0.9


def test_sampled_softmax_above_the_catalogue_threshold_learns(split):
    model = TransformerRecommender(**{**TINY, "full_softmax_max_items": 10, "n_negatives": 8,
                                      "exclude_seen": True})
    assert model.n_negatives_for(20) == 8 and model.n_negatives_for(10) is None
    model.fit(split.train, valid=split.valid)
    assert evaluate(model, split, ks=(1, 10)).overall["recall@1"] >= 0.9


def test_validation_scores_a_fixed_sample_when_capped(split):
    from segrec.models.transformer import validation_users

    users, fit_rows, valid_rows = validation_users(split.train, split.valid, 25, seed=0)
    again, _, _ = validation_users(split.train, split.valid, 25, seed=0)
    assert len(users) == 25 and np.array_equal(users, again) and fit_rows.shape[0] == 25
    assert (np.diff(valid_rows.indptr) > 0).all()
    model = TransformerRecommender(**{**TINY, "early_stopping": True, "epochs": 4, "patience": 2,
                                      "valid_users": 25, "validate_every": 2})
    model.fit(split.train, valid=split.valid)
    validated = [row["epoch"] for row in model.curve_ if "ndcg@10" in row]
    assert validated[:3] == [0, 2, 4]


def test_bf16_training_and_the_automatic_embedding_rate(split):
    from segrec.models.transformer import embedding_lr_scale

    assert embedding_lr_scale(80_000, 1_682) == pytest.approx(3.15, abs=0.01)  # ml-100k-like: dense
    assert embedding_lr_scale(10_700, 1_585) == 10.0  # amazon-like: sparse, capped
    assert embedding_lr_scale(10**7, 100) == 1.0
    model = TransformerRecommender(**{**TINY, "precision": "bf16", "batch_size": None, "batch_tokens": 64,
                                      "learning_rate": 3e-3, "embedding_lr_scale": "auto"})
    model.fit(split.train, valid=split.valid)
    assert evaluate(model, split, ks=(1, 10)).overall["recall@1"] >= 0.9
