"""load_interactions: every input format, column mapping, time parsing, ids, duplicates, side tables."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segrec import DataValidationError, Interactions, load_interactions, temporal_split
from segrec.data import Schema, movielens_schema
from segrec.errors import DataWarning

DATA = Path(__file__).resolve().parents[1] / "data"
ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"


def rows(data: Interactions) -> list[tuple]:
    """(user, item, rating, timestamp) in canonical order, external ids."""
    frame = data.to_frame()
    return list(frame.itertuples(index=False, name=None))


# ----------------------------------------------------------------- formats
def test_csv_dense_ids_follow_first_appearance_and_rows_are_user_time_ordered():
    data = load_interactions(DATA / "tiny.csv")
    assert data.user_vocab.ids.tolist() == ["u2", "007", "7"]
    assert data.item_vocab.ids.tolist() == ["i3", "i1", "i2"]
    assert rows(data) == [
        ("u2", "i1", 2.0, 999), ("u2", "i3", 4.0, 1000),
        ("007", "i1", 5.0, 1001), ("007", "i2", 1.0, 1003),
        ("7", "i1", 3.0, 1002),
    ]
    assert data.users.dtype == np.int32 and data.timestamps.dtype == np.int64
    assert data.ratings.dtype == np.float32
    assert data.source == str(DATA / "tiny.csv")


def test_ids_are_strings_so_leading_zeros_make_distinct_users():
    data = load_interactions(DATA / "tiny.csv")
    assert data.user_vocab.index(["007", "7", "07"]).tolist() == [1, 2, -1]


def test_parquet_with_integer_ids(tmp_path):
    frame = pd.DataFrame({"user_id": [10, 10, 3], "item_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0],
                          "timestamp": [3, 2, 1]})
    frame.to_parquet(tmp_path / "log.parquet")
    data = load_interactions(tmp_path / "log.parquet")
    assert data.user_vocab.ids.tolist() == ["10", "3"]
    assert rows(data) == [("10", "6", 2.0, 2), ("10", "5", 1.0, 3), ("3", "5", 3.0, 1)]


def test_dataframe_source_integral_float_ids_lose_the_dot_zero():
    frame = pd.DataFrame({"user_id": [1.0, 2.0], "item_id": ["a", "b"]})
    data = load_interactions(frame)
    assert data.user_vocab.ids.tolist() == ["1", "2"]
    assert data.source == "<DataFrame>"
    # no rating / timestamp columns: weight 1 and file order as time
    assert data.ratings.tolist() == [1.0, 1.0] and data.timestamps.tolist() == [0, 1]


def test_dataframe_is_not_mutated():
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [2, 2], "timestamp": [5, 6]})
    before = frame.copy()
    with pytest.warns(DataWarning):
        load_interactions(frame)
    pd.testing.assert_frame_equal(frame, before)


# Hand-made 3-row samples, stored under neutral names (no dataset files in git) and
# copied to the MovieLens file names that the loader recognises.
SAMPLES = {"u.data": "tab_sample.tsv", "ratings.dat": "colons_sample.txt"}


@pytest.mark.parametrize("name, fmt", [("u.data", "auto"), ("ratings.dat", "auto"), ("ratings.dat", "ml-1m")])
def test_movielens_headerless_formats(name, fmt, tmp_path):
    (tmp_path / name).write_bytes((DATA / SAMPLES[name]).read_bytes())
    data = load_interactions(tmp_path / name, fmt=fmt)
    assert data.user_vocab.ids.tolist() == ["1", "2"]
    assert data.item_vocab.ids.tolist() == ["10", "20"]
    assert data.ratings.tolist() == [5.0, 3.0, 4.0]
    assert len(data) == 3 and data.timestamps[0] > 8e8


def test_udata_under_another_name_needs_no_fmt_but_accepts_one(tmp_path):
    target = tmp_path / "log.tsv"
    target.write_bytes((DATA / SAMPLES["u.data"]).read_bytes())
    assert len(load_interactions(target)) == 3  # sniffed: tab-separated numbers, no header
    assert len(load_interactions(target, fmt="ml-100k")) == 3


def test_movielens_latest_ratings_csv_is_detected_by_header():
    data = load_interactions(DATA / "ratings.csv")
    assert data.user_vocab.ids.tolist() == ["1", "2"]
    assert rows(data)[0] == ("1", "20", 3.0, 1112484676)
    assert data.ratings.tolist() == [3.0, 4.5, 2.5]
    assert movielens_schema("ml-latest").user == "userId"


def test_tab_separated_with_header_is_sniffed(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("user_id\titem_id\nu\ta\nu\tb\n")
    assert load_interactions(path).item_vocab.ids.tolist() == ["a", "b"]


def test_column_mapping_separator_and_ignored_rating(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("uid;sku;score;when;extra\nA;x;9;2024-01-02;?\nA;y;8;2024-01-01;?\n")
    schema = Schema(user="uid", item="sku", rating=None, timestamp="when", sep=";")
    data = load_interactions(path, schema=schema)
    assert rows(data) == [("A", "y", 1.0, 1704067200), ("A", "x", 1.0, 1704153600)]


def test_headerless_file_with_names(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("1,a,100\n1,b,50\n")
    schema = Schema(header=False, names=("user_id", "item_id", "timestamp"))
    assert [r[1] for r in rows(load_interactions(path, schema=schema))] == ["b", "a"]


def test_multi_character_separator_from_schema(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("user_id||item_id\nu||a\nv||b\n")
    assert load_interactions(path, schema=Schema(sep="||")).n_users == 2


def test_canonical_order_matches_interactions_from_arrays():
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, n).astype(str), "item_id": rng.integers(0, 2000, n),
                          "rating": rng.integers(1, 6, n), "timestamp": rng.integers(0, 40, n)})  # many ties
    frame = frame.drop_duplicates(["user_id", "item_id"])
    layouts = {
        "random": frame,
        "time order": frame.sort_values("timestamp", kind="stable"),
        "user then time": frame.sort_values(["user_id", "timestamp"], kind="stable"),
    }
    for layout, table in layouts.items():
        _assert_canonical(load_interactions(table), table, layout)


def _assert_canonical(data, frame, layout):
    ref = Interactions.from_arrays(
        data.user_vocab.index(frame["user_id"]), data.item_vocab.index(frame["item_id"].astype(str)),
        ratings=frame["rating"], timestamps=frame["timestamp"],
        user_vocab=data.user_vocab, item_vocab=data.item_vocab)
    for name in ("users", "items", "ratings", "timestamps", "indptr"):
        assert np.array_equal(getattr(data, name), getattr(ref, name)), (layout, name)
        assert getattr(data, name).dtype == getattr(ref, name).dtype, (layout, name)


def test_byte_order_mark_and_windows_line_endings(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,rating\r\nu,a,1\r\nv,b,2\r\n")
    data = load_interactions(path)
    assert data.user_vocab.ids.tolist() == ["u", "v"] and data.ratings.tolist() == [1.0, 2.0]


def test_schema_is_frozen_strict_and_needs_names_without_header():
    schema = Schema(user="uid")
    with pytest.raises(ValueError):
        schema.user = "x"
    with pytest.raises(ValueError, match="extra"):
        Schema(usr="uid")
    with pytest.raises(ValueError, match="without a header line needs names"):
        Schema(header=False)
    assert schema.is_explicit("user") and not schema.is_explicit("rating")


def test_unknown_fmt_is_a_value_error():
    with pytest.raises(ValueError, match="unknown fmt 'xml'"):
        load_interactions(DATA / "tiny.csv", fmt="xml")


# ----------------------------------------------------------------- timestamps
def test_iso_timestamps_with_offsets_dates_and_epochs_mixed(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "user_id,item_id,timestamp\n"
        "u,a,2024-01-01T00:00:00Z\n"
        "u,b,2024-01-01 02:00:00+02:00\n"
        "u,c,2024-01-02\n"
        "u,d,1704067200\n"
    )
    data = load_interactions(path)
    by_item = dict(zip(data.item_vocab.id(data.items), data.timestamps.tolist(), strict=True))
    assert by_item == {"a": 1704067200, "b": 1704067200, "c": 1704153600, "d": 1704067200}


def test_uniform_iso_timestamps_take_the_fast_typed_path(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp\nu,a,2024-01-01T00:00:01\nu,b,2024-01-01T00:00:00\n")
    assert rows(load_interactions(path))[0] == ("u", "b", 1.0, 1704067200)


def test_float_epoch_seconds_are_floored():
    frame = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [10.9, 10.2]})
    assert load_interactions(frame).timestamps.tolist() == [10, 10]


def test_datetime_column_of_a_dataframe():
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["a"],
                          "timestamp": pd.to_datetime(["2024-01-01T01:00:00+01:00"])})
    assert load_interactions(frame).timestamps.tolist() == [1704067200]


def test_without_timestamps_split_follows_file_order(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u,i{j}\n" for j in range(10)))
    split = temporal_split(load_interactions(path))
    assert split.test.item_vocab.id(split.test.items).tolist() == ["i9"]
    assert split.valid.item_vocab.id(split.valid.items).tolist() == ["i8"]


# ----------------------------------------------------------------- duplicates
def test_duplicates_keep_latest_timestamp_ties_to_last_in_file_and_warn_once(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n"
        "u,a,1,5\n"
        "u,b,1,1\n"
        "u,a,2,9\n"
        "v,a,1,3\n"
        "u,a,3,9\n"   # ties with the row above at t=9; later in the file -> kept
        "u,a,4,1\n"
        "v,a,5,2\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_interactions(path)
    dup = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(dup) == 1
    assert "dropped 4 duplicate (user, item) rows (2 pairs occur more than once)" in str(dup[0].message)
    assert rows(data) == [("u", "b", 1.0, 1), ("u", "a", 3.0, 9), ("v", "a", 1.0, 3)]
    # vocabulary order is first appearance in the file, dropped rows included
    assert data.item_vocab.ids.tolist() == ["a", "b"]


def test_duplicates_without_timestamps_keep_the_last_row():
    frame = pd.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["a", "b", "a"], "rating": [1, 2, 3]})
    with pytest.warns(DataWarning, match="dropped 1 duplicate \\(user, item\\) row "):
        data = load_interactions(frame)
    assert rows(data) == [("u", "b", 2.0, 1), ("u", "a", 3.0, 2)]


def test_duplicate_rule_matches_a_pandas_reference_on_random_data():
    rng = np.random.default_rng(3)
    n = 5000
    frame = pd.DataFrame({"user_id": rng.integers(0, 30, n).astype(str),
                          "item_id": rng.integers(0, 40, n).astype(str),
                          "rating": np.arange(n) % 5 + 1, "timestamp": rng.integers(0, 20, n)})
    with pytest.warns(DataWarning):
        data = load_interactions(frame)
    ref = (frame.assign(pos=np.arange(n)).sort_values(["timestamp", "pos"])
           .drop_duplicates(["user_id", "item_id"], keep="last"))
    got = data.to_frame().sort_values(["user_id", "item_id"]).reset_index(drop=True)
    want = ref.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    assert got["rating"].tolist() == want["rating"].astype(float).tolist()
    assert got["timestamp"].tolist() == want["timestamp"].tolist()


def test_no_warning_without_duplicates():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_interactions(DATA / "tiny.csv")


# ----------------------------------------------------------------- side tables
def test_items_and_users_tables_align_to_dense_ids():
    with pytest.warns(DataWarning, match=r"tiny_items.csv: 1 of 3 items \(e.g. 'i9'\) do not occur"):
        data = load_interactions(DATA / "tiny.csv", items=DATA / "tiny_items.csv",
                                 users=DATA / "tiny_users.csv")
    items = data.item_table
    assert items["item_id"].tolist() == ["i3", "i1", "i2"]  # dense order; i9 not added
    assert items["title"].tolist() == ["", "Galactic Comet", "Tender Kiss"]
    assert items["categories"].tolist() == ["", "Sci-Fi|Adventure", "Romance"]
    assert np.isnan(items["year"].iloc[0]) and items["year"].iloc[1] == 1999
    assert data.n_items == 3
    users = data.user_table
    assert users["user_id"].tolist() == ["u2", "007", "7"]
    assert users["age"].tolist() == [22, 45, 31]  # "007" and "7" stay distinct here too
    assert list(users.columns) == ["user_id", "age", "gender"]


def test_table_column_mapping_and_dataframe_tables():
    items = pd.DataFrame({"sku": ["i1", "i2", "i3"], "name": ["A", "B", "C"], "genres": ["x", "y|z", "x"]})
    users = pd.DataFrame({"uid": ["u2", "007", "7"], "country": ["DE", "FR", "US"]})
    schema = Schema(item_id="sku", title="name", categories="genres", user_id="uid")
    data = load_interactions(DATA / "tiny.csv", schema=schema, items=items, users=users)
    assert list(data.item_table.columns) == ["item_id", "title", "categories"]
    assert data.item_table["categories"].tolist() == ["x", "x", "y|z"]
    assert data.user_table["country"].tolist() == ["DE", "FR", "US"]


def test_numeric_looking_titles_stay_text(tmp_path):
    (tmp_path / "items.csv").write_text('item_id,title\ni1,1984\ni2,"Hello, World"\ni3,2001\n')
    data = load_interactions(DATA / "tiny.csv", items=tmp_path / "items.csv")
    assert data.item_table["title"].tolist() == ["2001", "1984", "Hello, World"]


def test_subsets_keep_the_tables():
    data = load_interactions(DATA / "tiny.csv", users=DATA / "tiny_users.csv")
    split = temporal_split(data)
    assert split.train.user_table is data.user_table


# ----------------------------------------------------------------- real data
@pytest.mark.ml100k
def test_ml100k_loads_with_both_tables():
    if not (ML100K / "interactions.csv").exists():
        pytest.skip("ml-100k not present at ../shared/data/ml-100k")
    data = load_interactions(ML100K / "interactions.csv", items=ML100K / "items.csv",
                             users=ML100K / "users.csv")
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert data.item_table["title"].ne("").all() and data.item_table["categories"].ne("").all()
    assert list(data.user_table.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert data.user_counts().min() >= 20
    assert data.user_vocab.ids[0] == "1"


def test_error_type_is_catchable_as_value_error():
    with pytest.raises(ValueError):
        load_interactions(DATA / "empty.csv")
    with pytest.raises(DataValidationError):
        load_interactions(DATA / "does-not-exist.csv")
