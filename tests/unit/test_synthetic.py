"""The planted-segment generator: determinism, shapes, and the structure it promises to plant."""

import argparse
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mutual_info_score

from segrec import ConfigError, generate_synthetic, load_interactions
from segrec.cli import synth
from segrec.data.synthetic import GENRES, SyntheticData


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate_synthetic(n_users=1500, n_items=600, n_segments=4, seed=7)


@pytest.fixture(scope="module")
def log(data) -> pd.DataFrame:
    """Interactions with segment, primary category, previous item; sorted by user then time."""
    frame = data.interactions.merge(data.true_segments, on="user_id")
    primary = data.items.set_index("item_id")["categories"].str.split("|").str[0]
    frame["category"] = frame["item_id"].map(primary)
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    frame["prev"] = frame.groupby("user_id")["item_id"].shift(1)
    return frame


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    a = generate_synthetic(n_users=300, n_items=120, n_segments=3, seed=5)
    b = generate_synthetic(n_users=300, n_items=120, n_segments=3, seed=5)
    for name in ("interactions", "items", "users", "true_segments"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = generate_synthetic(n_users=300, n_items=120, n_segments=3, seed=6)
    assert not a.interactions.equals(c.interactions)


def test_frame_shapes_columns_and_types(data):
    assert list(data.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(data.items.columns) == ["item_id", "title", "categories", "release_year"]
    assert list(data.users.columns) == ["user_id", "age", "gender", "country", "occupation"]
    assert list(data.true_segments.columns) == ["user_id", "segment"]
    assert len(data.users) == len(data.true_segments) == 1500 and len(data.items) == 600
    assert data.users["user_id"].is_unique and data.items["item_id"].is_unique
    assert data.interactions["user_id"].iloc[0].startswith("u") and data.items["item_id"].iloc[0] == "i000"
    assert data.interactions["rating"].between(1, 5).all()
    assert data.interactions["timestamp"].is_monotonic_increasing  # a log in time order
    assert data.params["n_segments"] == 4 and data.params["seed"] == 7


def test_every_user_has_at_least_five_distinct_items_and_no_pair_repeats(data):
    counts = data.interactions.groupby("user_id").size()
    assert counts.index.size == 1500 and counts.min() >= 5
    assert not data.interactions.duplicated(["user_id", "item_id"]).any()
    assert 25 <= counts.mean() <= 45  # about the requested 40 per user


def test_power_law_popularity_and_activity(data):
    pop = data.interactions["item_id"].value_counts()
    top_decile = pop.iloc[: len(data.items) // 10].sum() / pop.sum()
    assert top_decile > 0.35  # a uniform catalogue would give 0.10
    activity = data.interactions.groupby("user_id").size()
    assert activity.max() > 8 * activity.median()


def test_all_segments_present_with_distinct_favourite_categories(data, log):
    assert sorted(data.true_segments["segment"].unique()) == [0, 1, 2, 3]
    shares = pd.crosstab(log["segment"], log["category"], normalize="index")
    assert shares.idxmax(axis=1).is_unique  # each segment's top category differs
    # a segment's top category is far above its share elsewhere
    for seg, cat in shares.idxmax(axis=1).items():
        assert shares.loc[seg, cat] > 2 * shares.drop(index=seg)[cat].mean()


def test_segment_specific_transitions(log):
    # The same previous item leads to different next items in different segments:
    # per (previous item, segment) the most frequent next item almost never agrees
    # between two segments, while with segments shuffled across users it often does.
    pairs = log.dropna(subset=["prev"])

    def top_next_agreement(frame, column):
        counts = frame.groupby(["prev", column, "item_id"]).size().rename("n").reset_index()
        counts = counts[counts.groupby(["prev", column])["n"].transform("sum") >= 8]
        top = counts.sort_values("n", ascending=False, kind="stable").drop_duplicates(["prev", column])
        both = top.merge(top, on="prev")
        both = both[both[f"{column}_x"] < both[f"{column}_y"]]
        assert len(both) > 100
        return (both["item_id_x"] == both["item_id_y"]).mean()

    users = pairs.drop_duplicates("user_id").set_index("user_id")["segment"]
    shuffled = pd.Series(np.random.default_rng(0).permutation(users.to_numpy()), index=users.index)
    assert top_next_agreement(pairs, "segment") < 0.05
    assert top_next_agreement(pairs.assign(shuffled=pairs["user_id"].map(shuffled)), "shuffled") > 0.15


def test_titles_are_built_from_their_category_words(data):
    row = data.items.iloc[0]
    primary = row["categories"].split("|")[0]
    adjectives, nouns = GENRES[primary]
    first_two = row["title"].split(" ")[:2]
    assert first_two[0] in adjectives and first_two[1] in nouns
    cats = data.items["categories"].str.split("|").explode()
    assert set(cats) <= set(GENRES) and cats.nunique() == data.params["n_categories"]


def test_user_attributes_carry_segment_signal(data):
    seg = data.true_segments["segment"].to_numpy()
    shuffled = np.random.default_rng(0).permutation(seg)
    for column in ("country", "occupation", "gender"):
        values = data.users[column].to_numpy()
        assert mutual_info_score(seg, values) > 4 * mutual_info_score(shuffled, values)
    ages = data.users.groupby(seg)["age"].mean()
    assert ages.max() - ages.min() > 5


def test_taste_drifts_over_time():
    def early_late_distance(strength):
        d = generate_synthetic(n_users=1200, n_items=300, n_segments=2, seed=3, drift_strength=strength)
        frame = d.interactions.merge(d.items, on="item_id")
        frame["category"] = frame["categories"].str.split("|").str[0]
        t = frame["timestamp"]
        early = frame[t < t.quantile(0.3)]["category"].value_counts(normalize=True)
        late = frame[t > t.quantile(0.7)]["category"].value_counts(normalize=True)
        return 0.5 * early.sub(late, fill_value=0).abs().sum()

    assert early_late_distance(2.0) > early_late_distance(0.0) + 0.03


def test_to_interactions_and_segment_labels(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicates, every table id is used
        inter = data.to_interactions()
    assert (inter.n_users, inter.n_items, len(inter)) == (1500, 600, len(data.interactions))
    assert inter.item_table["title"].ne("").all() and "age" in inter.user_table
    labels = data.segment_labels(inter.user_vocab)
    truth = data.true_segments.set_index("user_id")["segment"]
    assert labels.tolist() == truth.loc[inter.user_vocab.ids].tolist()


def test_small_catalogue_still_reaches_the_floor():
    d = generate_synthetic(n_users=40, n_items=10, n_segments=2, seed=0, mean_interactions=8)
    assert d.interactions.groupby("user_id").size().min() >= 5
    assert not d.interactions.duplicated(["user_id", "item_id"]).any()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_segments": 0}, "The 'n_segments' parameter of generate_synthetic must be an int in [1, n_users]. "
                        "Got 0 instead."),
    ({"n_items": 6}, "The 'n_items' parameter of generate_synthetic must be an int >= 2 * min_interactions"),
    ({"mean_interactions": 3}, "must be a number > min_interactions = 5. Got 3 instead."),
    ({"sequential_strength": 1.5}, "'sequential_strength' parameter of generate_synthetic must be "
                                   "a number in [0, 1]. Got 1.5 instead."),
    ({"n_categories": 99}, "'n_categories' parameter of generate_synthetic must be an int in [1, min(20, "),
])
def test_bad_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError) as info:
        generate_synthetic(**{"n_users": 20, "n_items": 50, **kwargs})
    assert message in str(info.value)


def test_cli_writes_four_csvs_that_load_back(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="segrec")
    synth.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--users", "200", "--items", "80", "--segments", "3", "--seed", "2",
                              "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert "interactions of 200 users x 80 items (3 segments, seed 2)" in capsys.readouterr().out
    same = generate_synthetic(n_users=200, n_items=80, n_segments=3, seed=2)
    truth = pd.read_csv(tmp_path / "true_segments.csv", dtype={"user_id": str})
    assert truth["user_id"].tolist() == same.true_segments["user_id"].tolist()
    assert truth["segment"].tolist() == same.true_segments["segment"].tolist()
    first_line = (tmp_path / "interactions.csv").read_text().splitlines()[0]
    assert first_line == "user_id,item_id,rating,timestamp"
    data = load_interactions(tmp_path / "interactions.csv", items=tmp_path / "items.csv",
                             users=tmp_path / "users.csv")
    assert len(data) == len(same.interactions) and data.n_users == 200
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


@pytest.mark.parametrize("shape, users, items, lo, hi", [
    ("ecommerce", 22_000, 12_000, 190_000, 215_000),
    ("microvideo", 50_000, 19_000, 340_000, 380_000),
])
def test_scale_shapes_have_the_advertised_size_and_sparsity(shape, users, items, lo, hi):
    from segrec.data.synthetic import SHAPES

    d = generate_synthetic(**SHAPES[shape])
    per_user = d.interactions.groupby("user_id").size()
    assert per_user.index.size == users and per_user.min() >= 5
    assert per_user.median() == 6
    assert lo <= len(d.interactions) <= hi
    used = d.interactions["item_id"].nunique()
    assert len(d.items) == items and used >= 0.98 * items  # nearly the whole catalogue is consumed
    assert not d.interactions.duplicated(["user_id", "item_id"]).any()


def test_cli_shape_flag_with_an_override(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="segrec")
    synth.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--shape", "microvideo", "--users", "300", "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert "of 300 users x 19,000 items (shape microvideo, 12 segments, seed 0)" in capsys.readouterr().out
    for name in ("interactions.csv", "items.csv", "users.csv", "true_segments.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert pd.read_csv(tmp_path / "users.csv")["user_id"].nunique() == 300
