"""Feature blocks and the pipeline (issue 3): fit on fit data only, weights, new users, text cache."""

import sys

import numpy as np
import pandas as pd
import pytest

from segrec.errors import ConfigError, MissingDependencyError, NotFittedError
from segrec.features import (
    BehaviorFeatures,
    CollaborativeFeatures,
    DemographicsFeatures,
    FeaturePipeline,
    HashingEmbedder,
    NewUsers,
    SentenceTransformerEmbedder,
    TextProfileFeatures,
    embed_cached,
    item_texts,
)
from segrec.types import Interactions, Vocabulary

DAY = 86400


def tiny() -> Interactions:
    """3 users, 4 items; u0: i0,i1 (ratings 5,3); u1: i2 x3 days apart; u2: i3 once."""
    items = pd.DataFrame(
        {
            "item_id": ["i0", "i1", "i2", "i3"],
            "title": ["Space Robot", "Robot War", "Love Song", "Ghost House"],
            "categories": ["SciFi", "SciFi|War", "Romance", "Horror"],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u2"],
            "age": [20, 40, np.nan],
            "gender": ["F", "M", "F"],
            "zip": ["111", "222", "333"],
        }
    )
    return Interactions.from_arrays(
        [0, 0, 1, 1, 1, 2],
        [0, 1, 2, 2, 2, 3],
        ratings=[5, 3, 4, 4, 4, 1],
        timestamps=[0, DAY, 0, 2 * DAY, 4 * DAY, 10 * DAY],
        user_vocab=Vocabulary(["u0", "u1", "u2"]),
        item_vocab=Vocabulary(["i0", "i1", "i2", "i3"]),
        item_table=items,
        user_table=users,
    )


def test_behavior_columns_hand_computed():
    data = tiny()
    block = BehaviorFeatures().fit(data)
    raw = pd.DataFrame(block.transform(data), columns=block.columns_)
    assert raw["log_activity"].tolist() == pytest.approx(np.log1p([2, 3, 1]).tolist())
    assert raw["recency_days"].tolist() == pytest.approx([9.0, 6.0, 0.0])
    assert raw["tenure_days"].tolist() == pytest.approx([1.0, 4.0, 0.0])
    assert raw["rating_mean"].tolist() == pytest.approx([4.0, 4.0, 1.0])
    assert raw["rating_std"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    # item counts 1,1,3,1 -> log1p popularity; u1 only watched the 3-count item
    assert raw["pop_affinity"][1] == pytest.approx(np.log1p(3))
    assert raw["cat=SciFi"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert raw["cat=War"].tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_blocks_learn_on_fit_data_only():
    data = tiny()
    fit = data.subset(data.users != 2)  # u2's only item (i3) is not in the fit data
    block = BehaviorFeatures().fit(fit)
    # popularity is the fit popularity: i3 has count 0 there
    raw = pd.DataFrame(block.transform(data), columns=block.columns_)
    assert raw["pop_affinity"][2] == pytest.approx(0.0)
    pipe = FeaturePipeline(blocks=("behavior",)).fit(fit)
    mean, _ = pipe.scaling_["behavior"]
    assert mean[0] == pytest.approx(np.log1p([2, 3]).mean())  # u2 (no fit rows) excluded from scaling


def test_demographics_one_hot_numeric_and_rare_levels():
    data = tiny()
    block = DemographicsFeatures(min_level_share=0.4).fit(data)
    # zip has 3 levels of 1/3 share each (< 0.4): dropped; gender F (2/3) kept, M (1/3) dropped
    assert block.columns_ == ("age", "gender=F")
    raw = block.transform(data)
    assert raw[:, 0].tolist() == [20.0, 40.0, 30.0]  # NaN age -> fit mean
    new = block.transform_new(NewUsers(["n"], attributes=pd.DataFrame({"gender": ["F"]})), data.item_vocab)
    assert new.tolist() == [[30.0, 1.0]]


def test_pipeline_block_weights_and_selection():
    data = tiny()
    emb = HashingEmbedder(8)
    pipe = FeaturePipeline(blocks=("behavior", "demographics", "text"), weights={"text": 2.0}, embedder=emb)
    feats = pipe.fit_transform(data)
    assert feats.blocks == ("behavior", "demographics", "text")
    # each block has total variance weight**2 over fit users
    for name, w in [("behavior", 1.0), ("demographics", 1.0), ("text", 2.0)]:
        assert (feats.block(name) ** 2).sum(1).mean() == pytest.approx(w**2, rel=1e-4)
    sub = feats.select(["text"])
    assert sub.columns[0] == "text.e0" and sub.n_features == 8
    assert feats.user_vocab.ids.tolist() == ["u0", "u1", "u2"]
    assert feats.item_rows.shape == (3, 4) and feats.stats["n_interactions"].tolist() == [2, 3, 1]
    with pytest.raises(ConfigError, match="svd"):
        FeaturePipeline(blocks=("behavior",), weights={"svd": 1.0})


def test_pipeline_not_fitted():
    with pytest.raises(NotFittedError):
        FeaturePipeline().transform(tiny())


def test_text_profile_recency_weighting():
    data = tiny()
    block = TextProfileFeatures(embedder=HashingEmbedder(16), half_life=1.0).fit(data)
    e = block.item_embeddings_
    raw = block.transform(data)
    # u0: i0 then i1; newest weighs 1, the one before 0.5
    expect = 0.5 * e[0] + 1.0 * e[1]
    assert raw[0] == pytest.approx(expect / np.linalg.norm(expect), abs=1e-6)
    assert np.linalg.norm(raw, axis=1) == pytest.approx(np.ones(3), abs=1e-6)


def test_item_texts_join_title_and_categories():
    assert item_texts(tiny().item_table, 4)[1] == "Robot War | SciFi, War"


class CountingEmbedder(HashingEmbedder):
    def __init__(self):
        super().__init__(4)
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return super().encode(texts)


def test_embedding_cache_by_content_hash(tmp_path):
    emb = CountingEmbedder()
    a = embed_cached(emb, ["x y", "z"], tmp_path)
    b = embed_cached(emb, ["x y", "z"], tmp_path)
    assert emb.calls == 1 and np.array_equal(a, b)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    embed_cached(emb, ["x y", "changed"], tmp_path)  # new content, new file
    assert emb.calls == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    files[0].write_bytes(b"garbage")  # a corrupt cache is recomputed, not fatal
    assert np.array_equal(embed_cached(emb, ["x y", "z"], tmp_path), a)


def test_missing_text_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"segrec\[text\]"):
        SentenceTransformerEmbedder().encode(["hello"])
    with pytest.raises(MissingDependencyError, match=r"segrec\[text\]"):
        TextProfileFeatures().fit(tiny())  # default embedder is MiniLM


def test_svd_fold_in_matches_transform():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 400), rng.integers(0, 30, 400)
    data = Interactions.from_arrays(
        users,
        items,
        user_vocab=Vocabulary([f"u{i}" for i in range(40)]),
        item_vocab=Vocabulary([f"i{i}" for i in range(30)]),
    )
    block = CollaborativeFeatures(n_components=5).fit(data)
    full = block.transform(data)
    hist = [list(data.item_vocab.id(data.history(u))) for u in range(3)]
    new = block.transform_new(NewUsers(["a", "b", "c"], histories=hist), data.item_vocab)
    assert new == pytest.approx(full[:3], abs=1e-9)


def test_new_users_from_attributes_or_items():
    data = tiny()
    pipe = FeaturePipeline(
        blocks=("behavior", "demographics", "text", "svd"),
        embedder=HashingEmbedder(8),
        svd={"n_components": 2},
    ).fit(data)
    new = NewUsers(
        ["a", "b"],
        attributes=pd.DataFrame({"age": [22, None], "gender": ["F", None]}),
        histories=[["i0", "i1", "unknown-item"], []],
    )
    feats = pipe.transform_new(new)
    assert feats.matrix.shape == (2, pipe.transform(data).n_features)
    assert np.isfinite(feats.matrix).all()
    assert feats.item_rows.toarray().tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]
    # the user with no items and no attributes sits at the population mean in text/svd
    assert feats.block("text")[1] == pytest.approx(np.zeros(8), abs=1e-6)
    # same history as u0 -> same text profile as u0
    assert feats.block("text")[0] == pytest.approx(pipe.transform(data).block("text")[0], abs=1e-6)


def test_repeated_texts_are_encoded_once(tmp_path):
    from segrec.features.text import HashingEmbedder, embed_cached

    class Counting(HashingEmbedder):
        seen: list = []

        def encode(self, texts):
            self.seen.append(list(texts))
            return super().encode(texts)

    emb = Counting(dim=8)
    texts = ["a b", "", "c", "a b", ""]
    out = embed_cached(emb, texts, None)
    assert emb.seen[-1] == ["a b", "", "c"]
    np.testing.assert_array_equal(out, HashingEmbedder(dim=8).encode(texts))
    out2 = embed_cached(emb, ["x", "y"], tmp_path)  # nothing repeats: encoded as given
    assert emb.seen[-1] == ["x", "y"] and out2.shape == (2, 8)


def test_svd_block_on_one_item_or_one_user_does_not_crash():
    """Issue 16 item 6: TruncatedSVD raised 'Found array with 1 feature(s)' on a one-item log."""
    import pandas as pd

    from segrec.data import load_interactions
    from segrec.features.collaborative import CollaborativeFeatures

    for frame in (pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i1", "i1"]}),
                  pd.DataFrame({"user_id": ["u1", "u1", "u1"], "item_id": ["i1", "i2", "i3"]})):
        data = load_interactions(frame)
        block = CollaborativeFeatures().fit(data)
        out = block.transform(data)
        assert out.shape[0] == data.n_users and np.isfinite(out).all()
