"""Every validation error, with its message pinned (file, column, rows, sample, expectation)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segrec import DataValidationError, SegrecError, load_interactions
from segrec.data import Schema
from segrec.data.validate import Problem, Problems

DATA = Path(__file__).resolve().parents[1] / "data"


def error_of(*args, **kwargs) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_interactions(*args, **kwargs)
    return info.value


def test_missing_column_names_what_was_found():
    path = DATA / "missing_column.csv"
    err = error_of(path)
    assert str(err) == (
        f"{path}: missing column 'item_id' (found columns: ['user_id', 'movie', 'rating', 'timestamp']); "
        'name the column with --item-col NAME (config: [data.columns] item = "NAME"; '
        "Python: Schema(item=...))"
    )
    assert (err.source, err.column, err.rows) == (str(path), "item_id", [])


def test_explicitly_mapped_optional_column_must_exist():
    with pytest.raises(DataValidationError, match=r"missing column 'stars' \(found columns: "):
        load_interactions(DATA / "tiny.csv", schema=Schema(rating="stars"))


def test_default_optional_columns_may_be_absent():
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["a"]})
    assert len(load_interactions(frame)) == 1


def test_unparseable_timestamps_message_matches_the_template():
    path = DATA / "bad_timestamp.csv"
    err = error_of(path)
    assert str(err) == (
        f"{path}: column 'timestamp' has 3 unparseable values on lines [4, 5, 6] (e.g. '2024-13-01'); "
        "expected ISO-8601 or epoch seconds"
    )
    assert (err.column, err.rows) == ("timestamp", [2, 3, 4])
    assert err.problem.startswith("column 'timestamp' has 3 unparseable values")


def test_bad_ratings_are_all_reported_at_once():
    path = DATA / "bad_rating.csv"
    err = error_of(path)
    lines = str(err).splitlines()
    assert lines[0] == f"4 problems in {path}:"
    assert lines[1:] == [
        f"  {path}: column 'rating' has 1 unparseable value on lines [3] (e.g. 'great'); "
        "expected non-negative numbers",
        f"  {path}: column 'rating' has 1 missing (empty or NaN) value on lines [4]; "
        "expected non-negative numbers",
        f"  {path}: column 'rating' has 1 infinite value on lines [5] (e.g. 'inf'); expected finite numbers",
        f"  {path}: column 'rating' has 1 negative value on lines [6] (e.g. '-2'); "
        "ratings/weights must be >= 0",
    ]
    assert (err.column, err.rows) == ("rating", [1])


def test_numeric_rating_column_checks_nan_inf_negative():
    frame = pd.DataFrame({"user_id": list("uvwxyz"), "item_id": list("abcdef"),
                          "rating": [1.0, np.nan, np.inf, -0.5, -np.inf, 2.0]})
    err = error_of(frame)
    assert "<DataFrame>: column 'rating' has 1 missing (empty or NaN) value at rows [1]" in str(err)
    assert "<DataFrame>: column 'rating' has 2 infinite values at rows [2, 4] (e.g. 'inf')" in str(err)
    assert "<DataFrame>: column 'rating' has 1 negative value at rows [3] (e.g. '-0.5')" in str(err)


def test_timestamp_nan_and_inf_in_a_float_column():
    frame = pd.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["a", "b", "c"],
                          "timestamp": [1.0, np.nan, np.inf]})
    err = error_of(frame)
    assert "column 'timestamp' has 1 missing (empty or NaN) value at rows [1]; expected ISO-8601" in str(err)
    assert "column 'timestamp' has 1 infinite value at rows [2] (e.g. 'inf')" in str(err)


def test_empty_timestamp_cell_in_text_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp\nu,a,2024-01-01\nu,b,\n")
    pattern = r"column 'timestamp' has 1 missing \(empty or NaN\) value on lines \[3\]"
    with pytest.raises(DataValidationError, match=pattern):
        load_interactions(path)


def test_empty_file():
    path = DATA / "empty.csv"
    pattern = re.escape(f"{path}: file is empty; expected a header line")
    with pytest.raises(DataValidationError, match=pattern):
        load_interactions(path)


def test_header_only_file():
    with pytest.raises(DataValidationError,
                       match=r"header_only.csv: has no data rows \(only the header \['user_id', 'item_id', "):
        load_interactions(DATA / "header_only.csv")


def test_empty_dataframe():
    with pytest.raises(DataValidationError, match="<DataFrame>: has no data rows"):
        load_interactions(pd.DataFrame({"user_id": [], "item_id": []}))


def test_empty_ids_in_both_columns():
    path = DATA / "empty_ids.csv"
    err = error_of(path)
    assert f"{path}: column 'user_id' has 1 empty id on lines [3]; every row needs a user id" in str(err)
    assert f"{path}: column 'item_id' has 1 empty id on lines [4]; every row needs an item id" in str(err)
    assert err.rows == [1]  # the attribute keeps 0-based data-row positions


def test_nan_and_blank_ids_in_a_dataframe():
    frame = pd.DataFrame({"user_id": ["u", None, "  ", np.nan], "item_id": ["a", "b", "c", "d"]})
    with pytest.raises(DataValidationError, match=r"column 'user_id' has 3 empty ids at rows \[1, 2, 3\]"):
        load_interactions(frame)


def test_rows_with_a_wrong_field_count_and_positions_of_later_problems():
    path = DATA / "wrong_fields.csv"
    err = error_of(path)
    text = str(err)
    assert (f"{path}: 2 rows have the wrong number of fields on lines [3, 5] (e.g. '2,b' has 2); "
            "expected 4 fields separated by ','") in text
    # row 4 is still row 4 (line 6) although rows 1 and 3 were skipped while parsing
    assert "column 'rating' has 1 unparseable value on lines [6] (e.g. 'x')" in text


def test_items_table_matching_nothing():
    items = DATA / "items_nomatch.csv"
    err = error_of(DATA / "tiny.csv", items=items)
    assert str(err) == (
        f"{items}: none of the 2 ids in column 'item_id' match any item of {DATA / 'tiny.csv'} (e.g. 'x1'); "
        "is this the items table of the same dataset?"
    )
    assert (err.source, err.column) == (str(items), "item_id")


def test_users_table_matching_nothing():
    users = pd.DataFrame({"user_id": ["nobody"], "age": [3]})
    pattern = r"<users DataFrame>: none of the 1 ids in column 'user_id' match any user of "
    with pytest.raises(DataValidationError, match=pattern):
        load_interactions(DATA / "tiny.csv", users=users)


def test_items_table_without_its_id_column():
    items = DATA / "items_noid.csv"
    with pytest.raises(DataValidationError, match=re.escape(
        f"{items}: missing id column 'item_id' (found columns: ['id', 'title', 'categories']); "
        "rename its id column to 'item_id' (Python: Schema(item_id=...))"
    )):
        load_interactions(DATA / "tiny.csv", items=items)


def test_users_table_without_its_id_column_names_the_schema_field():
    with pytest.raises(DataValidationError, match=r"missing id column 'user_id' .*Schema\(user_id=\.\.\.\)"):
        load_interactions(DATA / "tiny.csv", users=pd.DataFrame({"uid": ["7"]}))


def test_duplicate_ids_in_a_side_table():
    items = pd.DataFrame({"item_id": ["i1", "i2", "i1"], "title": ["a", "b", "c"]})
    pattern = r"column 'item_id' has 1 duplicate id at rows \[2\] \(e.g. 'i1'\); each item must"
    with pytest.raises(DataValidationError, match=pattern):
        load_interactions(DATA / "tiny.csv", items=items)


def test_missing_side_table_file():
    with pytest.raises(DataValidationError, match="nope.csv: items table not found"):
        load_interactions(DATA / "tiny.csv", items=DATA / "nope.csv")


def test_missing_interactions_file():
    with pytest.raises(DataValidationError, match="nope.csv: file not found"):
        load_interactions(DATA / "nope.csv")


def test_several_problems_across_files_make_one_error():
    path, items = DATA / "multi_problem.csv", DATA / "items_nomatch.csv"
    err = error_of(path, items=items)
    lines = str(err).splitlines()
    assert lines[0] == f"3 problems in {path}, {items}:"
    assert "column 'rating' has 1 negative value on lines [3] (e.g. '-1')" in lines[1]
    assert "column 'timestamp' has 1 unparseable value on lines [4] (e.g. 'not-a-time')" in lines[2]
    assert "none of the 2 ids in column 'item_id'" in lines[3]
    # the attributes describe the first problem
    assert (err.source, err.column, err.rows) == (str(path), "rating", [1])
    assert isinstance(err, SegrecError) and isinstance(err, ValueError)


def test_only_the_first_five_rows_are_listed(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("user_id,item_id,rating\n" + "".join(f"u,i{j},-{j + 1}\n" for j in range(8)))
    err = error_of(path)
    assert "has 8 negative values on lines [2, 3, 4, 5, 6] (e.g. '-1')" in str(err)
    assert err.rows == [0, 1, 2, 3, 4]


def test_invalid_utf8_names_the_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"user_id,item_id\nu,caf\xe9\n")
    pattern = r"latin.csv: is not valid (UTF|utf)-8 text.*--encoding"
    with pytest.raises(DataValidationError, match=pattern):
        load_interactions(path)
    assert load_interactions(path, schema=Schema(encoding="latin-1")).item_vocab.ids.tolist() == ["café"]


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError, match="log.parquet: is not a readable Parquet file"):
        load_interactions(path)


def test_problems_collector_single_line_and_none_ignored():
    problems = Problems()
    problems.add(None)
    problems.raise_if_any()  # nothing recorded: no error
    problems.add(Problem("a.csv", "column 'x' has 1 bad value at rows [0]", "x", (0,)))
    pattern = r"^a.csv: column 'x' has 1 bad value at rows \[0\]$"
    with pytest.raises(DataValidationError, match=pattern) as info:
        problems.raise_if_any()
    assert (info.value.source, info.value.column, info.value.rows) == ("a.csv", "x", [0])


def test_ratings_beyond_float32_are_out_of_range(tmp_path):
    """Found by benchmarks/bench_fuzz_files.py: 1e39 is finite in float64 but became inf as float32."""
    path = tmp_path / "big.csv"
    path.write_text("user_id,item_id,rating\nu,a,1\nu,b,1e39\n")
    with pytest.raises(DataValidationError, match=r"column 'rating' has 1 out-of-range value on lines \[3\]"):
        load_interactions(path)
