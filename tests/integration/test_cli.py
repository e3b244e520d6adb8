"""The `segrec` CLI end to end, in-process: synth -> run -> recommend, and user errors."""

import json

import pandas as pd
import pytest

from segrec.cli import main

CHEAP = "popularity,ease,local_ease,segmented"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--users", "300", "--items", "150", "--segments", "3", "--seed", "1",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "art"
    code = main(["run", "--data", str(synth_dir / "interactions.csv"),
                 "--items", str(synth_dir / "items.csv"),
                 "--users", str(synth_dir / "users.csv"), "--systems", CHEAP, "--segments", "3",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_synth_writes_the_four_files(synth_dir):
    for name in ("interactions.csv", "items.csv", "users.csv", "true_segments.csv"):
        assert (synth_dir / name).stat().st_size > 0
    truth = pd.read_csv(synth_dir / "true_segments.csv")
    assert list(truth.columns) == ["user_id", "segment"] and truth.segment.nunique() == 3


def test_run_writes_results_and_artifacts(run_dir, capsys):
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["systems"]) == set(CHEAP.split(","))
    for name, rep in results["systems"].items():
        assert 0.0 <= rep["overall"]["ndcg@10"] <= 1.0, name
        assert set(rep["terciles"]["ndcg@10"]) == {"light", "medium", "heavy"}
    assert "segmented - ease" in results["comparisons"]
    assert set(results["routing"]) == {"0", "1", "2"}
    assert not list(run_dir.parent.glob(".art.tmp-*"))  # nothing half-written left behind
    # the served system is chosen on inner validation, the test winner only reported (issue 14)
    valid, served = results["validation"], results["best_system"]
    assert set(valid) == set(CHEAP.split(",")) and results["test_winner"] in results["systems"]
    assert json.loads((run_dir / "manifest.json").read_text())["best_system"] == served
    if served != "segmented":
        assert valid[served] == max(v for n, v in valid.items() if n != "segmented")
    assert (served == "segmented") == results["selection"]["routing_pays"]


def test_recommend_list_and_file(run_dir, tmp_path, capsys):
    assert main(["recommend", str(run_dir), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "(best)" in listed and "segmented" in listed
    users = pd.read_parquet(run_dir / "segments.parquet")["user_id"].head(5).tolist()
    (tmp_path / "u.txt").write_text("\n".join(users) + "\n")
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(run_dir), "--users", str(tmp_path / "u.txt"), "--k", "7",
                 "--out", str(out), "--system", "ease"]) == 0
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(recs) == 35 and recs.groupby("user_id")["rank"].max().eq(7).all()
    assert (recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_no_split_fits_without_evaluating(synth_dir, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["run", "--data", str(synth_dir / "interactions.csv"), "--systems", "popularity,ease",
                 "--no-split", "--segments", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "no evaluation" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["systems"] == {}
    assert (out / "systems" / "ease" / "model.json").exists()
    # no test set, yet the served default is the better system on inner validation
    valid = results["validation"]
    assert set(valid) == {"popularity", "ease"} and results["best_system"] == max(valid, key=valid.get)
    assert "served: ease" in printed


@pytest.mark.parametrize("argv, message", [
    (["run", "--data", "does-not-exist.csv"], "--data does-not-exist.csv: file not found"),
    (["recommend", "nowhere"], "nowhere: not a directory"),
    (["run", "--systems", "nope", "--segments", "2"], "unknown system 'nope'"),
])
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segrec: error:") and message in err and "\n" not in err
