"""The Recommender contract: checks every model must pass (construction, fit, recommend, artifacts)."""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from ..errors import NotFittedError, SegrecError, UnknownIDError
from ..evaluate import evaluate
from ..models import FitContext, Recommender, check_is_fitted, get_tags, model_class, registered_models
from ..types import Interactions, Split
from ._data import planted_labels, planted_split, random_interactions

__all__ = ["RecommenderContract", "assert_same_ranking"]

UNKNOWN_USER = "no-such-user"


def assert_same_ranking(a, b, *, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Assert two :class:`Recommendations` agree: same ids and padding, close scores.

    Items may differ only where their scores tie within tolerance (batched and
    single BLAS calls can round differently, which may reorder exact ties).

    Raises:
        AssertionError: With the first disagreeing user.
    """
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    assert a.item_ids.shape == b.item_ids.shape, (a.item_ids.shape, b.item_ids.shape)
    np.testing.assert_array_equal(a.item_ids == None, b.item_ids == None)  # noqa: E711 (elementwise)
    np.testing.assert_allclose(a.scores, b.scores, rtol=rtol, atol=atol, equal_nan=True)
    differ = a.item_ids != b.item_ids
    for row, col in zip(*np.nonzero(differ), strict=True):
        tied = np.isclose(a.scores[row], a.scores[row, col], rtol=rtol, atol=atol)
        assert b.item_ids[row, col] in set(a.item_ids[row][tied]), (
            f"user {a.user_ids[row]}: rank {col + 1} is {a.item_ids[row, col]} vs "
            f"{b.item_ids[row, col]}, not a tie")


def _arrays(data: Interactions) -> dict[str, np.ndarray]:
    return {name: getattr(data, name).copy()
            for name in ("users", "items", "ratings", "timestamps", "indptr")}


class RecommenderContract:
    """Mixin of pytest checks every :class:`~segrec.models.Recommender` must pass.

    A test class inherits it and defines :meth:`make_model` (a fresh, unfitted,
    seeded model with small settings); optionally :meth:`make_data` and the class
    attributes below. One fitted model is shared by the read-only checks of a class.

    Attributes:
        known_answer: Whether the model must reach ``min_recall_at_1`` on the
            planted data (False for models that ignore the user, e.g. popularity).
        min_recall_at_1: Mean recall@1 required on the planted test items.
        scores_every_item: Whether every known (user, item) score is finite; a
            routed model that returns NaN for fallback sets it False.

    What a model takes is read from its declared tags (:func:`segrec.models.get_tags`):
    a model tagged ``requires_segments`` is fitted with the planted groups, and
    ``score_histories`` is checked with both item rows and item sequences.
    """

    known_answer: ClassVar[bool] = True
    min_recall_at_1: ClassVar[float] = 1.0
    scores_every_item: ClassVar[bool] = True

    def make_model(self) -> Recommender:
        """Return a fresh, unfitted model with small, seeded settings."""
        raise NotImplementedError("a RecommenderContract test class must define make_model()")

    def make_data(self) -> Split:
        """Return the Split to fit (``train`` with ``valid``) and check; planted by default."""
        return planted_split()

    def fit_context(self, model: Recommender, train: Interactions) -> FitContext | None:
        """The context of a fit on ``train``: the planted groups for a model that requires segments."""
        if get_tags(model).requires_segments:
            return FitContext(segments=planted_labels(train.n_users))
        return None

    def _fit_model(self, model: Recommender, train: Interactions, valid: Interactions | None = None):
        return model.fit(train, valid=valid, context=self.fit_context(model, train))

    # ------------------------------------------------------------ shared fixtures
    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Split:
        """The class's Split, built once."""
        return cls().make_data()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data: Split) -> Recommender:
        """One model fitted on ``data.train`` with ``data.valid``; checks must not mutate it."""
        checks = cls()
        return checks._fit_model(checks.make_model(), data.train, data.valid)

    @staticmethod
    def _user_ids(data: Split) -> np.ndarray:
        return data.fit.user_vocab.id(data.fit.active_users())

    # ------------------------------------------------------------ construction
    def test_constructs_without_data(self):
        """Built from settings alone: a config, a repr, no learned state, not fitted."""
        model = self.make_model()
        assert isinstance(model, Recommender)
        assert type(model).__name__ in repr(model)
        assert isinstance(model.config, type(model).Config)
        learned = {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("__")}
        assert all(v is None for v in learned.values()), f"learned state before fit: {sorted(learned)}"
        with pytest.raises(NotFittedError):
            check_is_fitted(model)

    def test_config_round_trip(self):
        """``type(m)(config=m.config)``, kwargs, ``with_params`` and JSON all give the same frozen config."""
        model = self.make_model()
        cfg = model.config
        assert type(model)(config=cfg).config == cfg
        assert type(model)(**cfg.model_dump()).config == cfg
        assert model.with_params().config == cfg
        assert type(model).Config.model_validate_json(cfg.model_dump_json()) == cfg  # artifacts use JSON
        with pytest.raises(TypeError):
            type(model)(config=cfg, **{next(iter(cfg.model_dump()), "x"): None})
        with pytest.raises(ValueError):
            type(model)(no_such_setting=1)
        fields = list(type(model).Config.model_fields)
        if fields:
            with pytest.raises((TypeError, ValueError)):  # configs are frozen
                setattr(cfg, fields[0], getattr(cfg, fields[0]))

    def test_registered_for_load(self):
        """The class is registered under its ``name``, so ``Recommender.load`` finds it; tags are declared."""
        model = self.make_model()
        assert model_class(model.name) is type(model), (
            f"{type(model).__name__} must declare a unique class attribute `name` (Recommender.load)")
        tags = get_tags(model)
        with pytest.raises(AttributeError):
            tags.no_such_tag  # noqa: B018 - an unknown tag is an error, not a silent False

    def test_not_fitted_raises(self, tmp_path):
        """Using recommend / score / score_dense / save before fit raise NotFittedError."""
        model = self.make_model()
        with pytest.raises(NotFittedError):
            model.recommend(["u0"], k=3)
        with pytest.raises(NotFittedError):
            model.score(["u0"], ["i0"])
        with pytest.raises(NotFittedError):
            model.score_dense(np.array([0]))
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "model")
        assert not (tmp_path / "model").exists()

    # --------------------------------------------------------------------- fit
    def test_fit_returns_self_and_leaves_input_alone(self, data):
        """``fit`` returns self and neither fit nor recommend mutates the input arrays."""
        before = {"train": _arrays(data.train), "valid": _arrays(data.valid)}
        model = self.make_model()
        assert self._fit_model(model, data.train, data.valid) is model
        check_is_fitted(model)
        model.recommend(self._user_ids(data)[:3], k=4)
        model.score(self._user_ids(data)[:3], data.fit.item_vocab.ids[:4])
        for part, arrays in before.items():
            for name, arr in arrays.items():
                np.testing.assert_array_equal(getattr(getattr(data, part), name), arr,
                                              err_msg=f"fit/recommend changed {part}.{name}")

    def test_fit_rejects_empty_data(self, data):
        """Fitting on no interactions is a SegrecError, not a crash later."""
        with pytest.raises(SegrecError):
            empty = data.train.subset(np.zeros(len(data.train), bool))
            self._fit_model(self.make_model(), empty)

    def test_same_random_state_same_model(self, data, fitted):
        """Two fits with the same settings (and seed) give bit-identical scores."""
        again = self._fit_model(self.make_model(), data.train, data.valid)
        users = np.arange(data.train.n_users)
        np.testing.assert_array_equal(again.score_dense(users), fitted.score_dense(users))

    def test_refit_forgets_old_fit(self, data, fitted):
        """A second fit replaces the first completely: vocabularies, users and scores."""
        other = random_interactions(n_users=9, n_items=data.train.n_items + 4, seed=3,
                                    user_prefix="x", item_prefix="y")
        model = self._fit_model(self.make_model(), other)
        assert self._fit_model(model, data.train, data.valid) is model
        assert model.item_vocab_ == data.train.item_vocab
        assert model.user_vocab_ == data.train.user_vocab
        with pytest.raises(UnknownIDError):
            model.recommend(["x0"], k=2)
        users = np.arange(data.train.n_users)
        np.testing.assert_allclose(model.score_dense(users), fitted.score_dense(users), rtol=1e-5, atol=1e-6)

    # --------------------------------------------------------------- recommend
    def test_batch_equals_single(self, data, fitted):
        """A batch equals its users asked one at a time; duplicate ids get identical rows."""
        ids = self._user_ids(data)
        batch = fitted.recommend(ids, k=5)
        assert batch.item_ids.shape == (len(ids), 5)
        np.testing.assert_array_equal(batch.user_ids, ids)
        for i, uid in enumerate(ids):
            single = fitted.recommend(uid, k=5)  # a bare id, not a list
            assert len(single) == 1
            assert_same_ranking(single, _row(batch, i))
        dup = fitted.recommend([ids[0], ids[0]], k=5)
        np.testing.assert_array_equal(dup.item_ids[0], dup.item_ids[1])

    def test_empty_batch(self, fitted):
        """An empty batch gives an empty (0, k) result."""
        recs = fitted.recommend([], k=3)
        assert len(recs) == 0
        assert recs.item_ids.shape == (0, 3)

    def test_exclude_seen(self, data, fitted):
        """Fit items (train ∪ valid) never come back; ``exclude_seen=False`` lists them too."""
        ids = self._user_ids(data)
        n_items = data.fit.n_items
        seen = data.fit.to_csr()  # train ∪ valid: everything the model was fit on
        users = data.fit.user_vocab.index(ids)
        recs = fitted.recommend(ids, k=n_items)
        for row, u in enumerate(users):
            items = recs.item_ids[row]
            got = fitted.item_vocab_.index([i for i in items if i is not None])
            own = set(seen[u].indices)
            assert not own & set(got.tolist()), f"user {ids[row]} was recommended a fit item"
            assert len(got) == n_items - len(own), "every unseen item should be listed once"
        full = fitted.recommend(ids, k=n_items, exclude_seen=False)
        assert all(i is not None for i in full.item_ids.ravel()), "exclude_seen=False lists the catalogue"
        for row in range(len(users)):
            assert set(fitted.item_vocab_.index(full.item_ids[row]).tolist()) == set(range(n_items))

    def test_k_larger_than_catalogue(self, data, fitted):
        """A k beyond the catalogue lists every remaining item once, best first, None/NaN padded."""
        ids = self._user_ids(data)[:4]
        n_items = data.fit.n_items
        k = n_items + 3
        recs = fitted.recommend(ids, k=k)
        assert recs.item_ids.shape == (len(ids), k)
        assert recs.scores.shape == (len(ids), k)
        for row in range(len(ids)):
            listed = recs.item_ids[row]
            present = np.array([i is not None for i in listed])
            n = int(present.sum())
            assert present[:n].all() and not present[n:].any(), "None pads only the tail"
            assert len(set(listed[:n])) == n, "no item twice"
            assert np.isnan(recs.scores[row, n:]).all()
            assert np.all(np.diff(recs.scores[row, :n]) <= 1e-6), "best first"
        with pytest.raises(SegrecError):
            fitted.recommend(ids, k=0)

    def test_unknown_user_raises(self, data, fitted):
        """An id outside the fit vocabulary raises UnknownIDError naming it."""
        known = self._user_ids(data)[0]
        with pytest.raises(UnknownIDError, match=UNKNOWN_USER):
            fitted.recommend([UNKNOWN_USER], k=3)
        with pytest.raises(UnknownIDError, match=UNKNOWN_USER):
            fitted.recommend([known, UNKNOWN_USER], k=3)
        with pytest.raises(UnknownIDError, match=UNKNOWN_USER):
            fitted.score([UNKNOWN_USER], [data.fit.item_vocab.ids[0]])

    # ------------------------------------------------------------------ scores
    def test_score_shape_and_nan(self, data, fitted):
        """``score`` is (users, items asked) in the order asked, NaN for unknown items."""
        ids = self._user_ids(data)[:3]
        items = list(data.fit.item_vocab.ids[::-1]) + ["no-such-item"]
        scores = fitted.score(ids, items)
        assert scores.shape == (len(ids), len(items))
        assert np.isnan(scores[:, -1]).all(), "an unknown item scores NaN"
        if self.scores_every_item:
            assert np.isfinite(scores[:, :-1]).all()
        dense = np.asarray(fitted.score_dense(data.fit.user_vocab.index(ids)), dtype=np.float32)
        assert dense.shape == (len(ids), data.fit.n_items)
        cols = fitted.item_vocab_.index(items[:-1])
        np.testing.assert_allclose(scores[:, :-1], dense[:, cols], rtol=1e-5, atol=1e-6)

    def test_recommend_scores_match_score(self, data, fitted):
        """The scores in a list are the model's ``score`` for those items."""
        ids = self._user_ids(data)[:5]
        recs = fitted.recommend(ids, k=4)
        for row, uid in enumerate(ids):
            listed = [i for i in recs.item_ids[row] if i is not None]
            np.testing.assert_allclose(recs.scores[row, : len(listed)],
                                       fitted.score([uid], listed)[0], rtol=1e-5, atol=1e-6)

    # --------------------------------------------------------------- artifacts
    def test_save_load_identical(self, data, fitted, tmp_path):
        """Saving then ``Recommender.load`` gives bit-identical lists and scores; wrong class refused."""
        path = fitted.save(tmp_path / "model")
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted)
        assert loaded.config == fitted.config
        ids = self._user_ids(data)
        for exclude in (True, False):
            a = fitted.recommend(ids, k=6, exclude_seen=exclude)
            b = loaded.recommend(ids, k=6, exclude_seen=exclude)
            np.testing.assert_array_equal(a.item_ids, b.item_ids)
            np.testing.assert_array_equal(a.scores, b.scores)
        users = np.arange(data.fit.n_users)
        np.testing.assert_array_equal(loaded.score_dense(users), fitted.score_dense(users))
        assert type(fitted).load(path).config == fitted.config
        wrong = next(cls for cls in registered_models().values() if cls is not type(fitted))
        with pytest.raises(SegrecError):
            wrong.load(path)
        loaded.save(tmp_path / "again")  # a loaded model is a fitted model

    # ------------------------------------------------------------ known answer
    def test_known_answer(self, data, fitted):
        """Recall@1 on the planted test items reaches ``min_recall_at_1``."""
        if not self.known_answer:
            pytest.skip(f"{type(fitted).__name__} does not personalise; no known answer")
        report = evaluate(fitted, data, ks=(1,))
        assert report.overall["recall@1"] >= self.min_recall_at_1, report.overall

    @pytest.mark.parametrize("form", ["sequences", "rows"])
    def test_score_histories(self, data, fitted, form):
        """New users from item sequences or item rows: right shape, finite, input untouched, known answer."""
        if get_tags(fitted).history_input is None:
            pytest.skip(f"{type(fitted).__name__} declares no new-user path (history_input=None)")
        seen = data.fit.to_csr()
        users = data.fit.active_users()
        rows = sp.csr_matrix(seen[users])
        if form == "sequences":
            histories = [data.fit.history(u).tolist() for u in users]
        else:
            # weights other than 1 catch a model that binarises its input in place
            histories = sp.csr_matrix((np.full(rows.nnz, 2.0, np.float32), rows.indices, rows.indptr),
                                      shape=rows.shape)
        before = copy.deepcopy(histories)
        context = self.fit_context(fitted, data.train)
        segments = None if context is None or context.segments is None else context.segments[users]
        scores = np.asarray(fitted.score_histories(histories, segments))
        assert scores.shape == (len(users), data.fit.n_items)
        assert np.isfinite(scores).all()
        if sp.issparse(histories):
            assert (histories != before).nnz == 0, "score_histories changed its input"
        else:
            assert histories == before, "score_histories changed its input"
        empty = np.asarray(fitted.score_histories([[]], None if segments is None else segments[:1]))
        assert empty.shape == (1, data.fit.n_items)
        if get_tags(fitted).needs_history:
            assert np.isnan(empty).all(), "an empty history must score NaN, so a fallback can serve it"
        if self.known_answer:
            masked = np.where(rows.toarray() > 0, -np.inf, scores)
            truth = data.test.to_csr()[users]
            top = masked.argmax(1)
            recall = np.asarray(truth[np.arange(len(users)), top]).ravel().mean()
            assert recall >= self.min_recall_at_1, f"new-user recall@1 {recall:.2f}"


def _row(recs, i):
    """One row of a Recommendations as a 1-user Recommendations."""
    from ..types import Recommendations

    return Recommendations(recs.user_ids[i : i + 1], recs.item_ids[i : i + 1], recs.scores[i : i + 1],
                           recs.segment[i : i + 1], recs.tier[i : i + 1])
