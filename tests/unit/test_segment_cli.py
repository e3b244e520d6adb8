"""``segrec segment`` (issue 3), run in-process through the real ``segrec`` parser.

Through :func:`segrec.cli.main`, not a parser of its own: the verb was once documented but
never registered, and a private parser could not see that (issue 15).
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from segrec.cli import main


def run(argv):
    return main(["segment", *argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    genres = ["SciFi", "Romance", "Horror"]
    words = [["space", "robot", "alien"], ["love", "kiss", "wedding"], ["ghost", "zombie", "crypt"]]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(60)],
            "title": [f"{rng.choice(words[i % 3])} {rng.choice(words[i % 3])}" for i in range(60)],
            "categories": [genres[i % 3] for i in range(60)],
        }
    )
    truth = np.arange(90) % 3
    rows = []
    for u in range(90):
        for t, it in enumerate(rng.choice(np.flatnonzero(np.arange(60) % 3 == truth[u]), 12, replace=False)):
            rows.append((f"u{u}", f"i{it}", 4, 1000 + t))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        d / "inter.csv", index=False
    )
    items.to_csv(d / "items.csv", index=False)
    pd.DataFrame({"user_id": [f"u{u}" for u in range(90)], "age": 20 + 10 * truth}).to_csv(
        d / "users.csv", index=False
    )
    return d, truth


def test_segment_writes_csv_and_prints_profiles(files, capsys):
    d, truth = files
    out = d / "out.csv"
    code = run(
        [
            "--data",
            str(d / "inter.csv"),
            "--items",
            str(d / "items.csv"),
            "--users",
            str(d / "users.csv"),
            "--method",
            "kmeans",
            "--k",
            "auto",
            "--embedder",
            "hashing",
            "--out",
            str(out),
            "--save",
            str(d / "seg"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "method kmeans, 3 segments" in printed and "silhouette" in printed
    assert printed.count("  segment ") == 3 and "likes " in printed
    frame = pd.read_csv(out, dtype={"user_id": str})
    assert frame.columns.tolist() == ["user_id", "segment"] and len(frame) == 90
    labels = frame.set_index("user_id").loc[[f"u{u}" for u in range(90)], "segment"].to_numpy()
    assert adjusted_rand_score(truth, labels) >= 0.9
    assert (d / "seg" / "segmentation.json").exists()


def test_segment_parquet_tiers_and_bad_k(files, capsys):
    d, _ = files
    out = d / "tiers.parquet"
    assert (
        run(["--data", str(d / "inter.csv"), "--method", "tiers", "--embedder", "none", "--out", str(out)])
        == 0
    )
    assert pd.read_parquet(out).shape == (90, 2)
    capsys.readouterr()
    assert run(["--data", str(d / "inter.csv"), "--k", "zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--k" in err and "'auto'" in err
