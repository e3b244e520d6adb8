"""Wall time, peak memory and served accuracy of the default ``segrec run`` on real-shaped data.

For each dataset the protocol split is made once (EVAL_PROTOCOL.md); its fit part
(train ∪ valid) is written to ``fit.csv`` and fitted exactly as a user deploying
segrec would: ``segrec run --data fit.csv [--items] [--users] --no-split`` with every
default, timed as a whole process by ``/usr/bin/time -v`` (wall seconds; peak RSS is the
larger of its number and the run's own largest stage peak, see :func:`peak_memory`).
Then ``segrec recommend`` writes top-10 lists for the test users from the run's
default (served) system, and they are scored against the held-out test part with
the protocol's NDCG@10 — so one row says what a deployment costs *and* what it buys.

``demo`` is the bare ``segrec run`` on the built-in data (it evaluates itself).
``synth-ecommerce`` / ``synth-microvideo`` are the ``segrec synth --shape`` logs.

The command runs the ``segrec`` found next to this Python (the checkout's venv);
set ``--segrec`` and ``PYTHONPATH`` to time another checkout (the "before" rows).

    python benchmarks/bench_pipeline.py --datasets ml-100k,amazon-scientific --label after
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import git_commit  # noqa: E402

SHARED = Path(os.environ.get("SEGREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REAL = {"ml-100k": SHARED / "ml-100k", "amazon-scientific": SHARED / "amazon-scientific"}
SYNTH = ("synth-ecommerce", "synth-microvideo")


def uptime() -> str:
    """The load averages, printed beside every timing (the machine is shared)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def prepare(name: str, work: Path, segrec: str) -> dict:
    """fit.csv (+ items/users) and the test part of one dataset, made once and cached."""
    from segrec.data import load_interactions
    from segrec.split import temporal_split

    d = work / name
    meta_file = d / "prepared.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    d.mkdir(parents=True, exist_ok=True)
    if name in REAL:
        src = REAL[name]
        items = src / "items.csv" if (src / "items.csv").exists() else None
        users = src / "users.csv" if (src / "users.csv").exists() else None
        inter = src / "interactions.csv"
    else:
        out = d / "raw"
        subprocess.run([segrec, "synth", "--shape", name.removeprefix("synth-"), "--out", str(out)],
                       check=True)
        inter, items, users = out / "interactions.csv", out / "items.csv", out / "users.csv"
        items = items if items.exists() else None
        users = users if users.exists() else None
    data = load_interactions(str(inter))
    split = temporal_split(data)
    for part, rows in (("fit", split.fit), ("test", split.test)):
        frame = rows.to_frame()
        frame.to_csv(d / f"{part}.csv", index=False)
    meta = {"fit": str(d / "fit.csv"), "test": str(d / "test.csv"),
            "items": str(items) if items else None, "users": str(users) if users else None,
            "n_users": data.n_users, "n_items": data.n_items, "interactions": len(data),
            "fit_interactions": len(split.fit)}
    meta_file.write_text(json.dumps(meta))
    return meta


def timed(cmd: list[str], log: Path, timeout: float) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; wall seconds, peak RSS (GB), exit code."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"wall_s": round(wall, 1), "time_v_rss_kb": int(rss.group(1)) if rss else None, "rc": rc}


def peak_memory(row: dict, run_dir: Path) -> None:
    """The run's peak RSS: the larger of ``/usr/bin/time -v``'s and the run's own stage peak.

    segrec resets the kernel's high-water mark at every stage (to report per-stage peaks),
    and that also resets what ``time -v`` sees at exit: alone it covers only the last
    stage. The run's ``results.json`` keeps the largest stage peak (``peak_rss_mb``).
    """
    kb = [row.pop("time_v_rss_kb", None) or 0]
    try:
        kb.append(json.loads((run_dir / "results.json").read_text()).get("peak_rss_mb", 0) * 1024)
    except (OSError, ValueError):
        pass
    row["peak_rss_gib"] = round(max(kb) / 2**20, 2)
    row["peak_rss_gb"] = round(max(kb) * 1024 / 1e9, 2)


def ndcg_at_10(recs: pd.DataFrame, test: pd.DataFrame) -> tuple[float, int]:
    """Protocol NDCG@10 (binary gains, log2 discount) over users with test items."""
    truth = test.groupby("user_id")["item_id"].apply(lambda s: set(s.astype(str)))
    lists = recs.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(
        lambda s: list(s.astype(str))[:10])
    disc = 1.0 / np.log2(np.arange(2, 12))
    scores = []
    for user, items in truth.items():
        got = lists.get(user, [])
        gains = np.array([1.0 if it in items else 0.0 for it in got] + [0.0] * (10 - len(got)))
        idcg = disc[: min(len(items), 10)].sum()
        scores.append(float(gains @ disc) / idcg)
    return float(np.mean(scores)), len(scores)


def served_system(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("best_system")
    except (OSError, ValueError):
        return None


def bench_one(name: str, work: Path, segrec: str, timeout: float) -> dict:
    """Time the default run on one dataset and score its served system on test."""
    row: dict = {"dataset": name}
    run_dir = work / name / "run"
    log = work / name / "run.log"
    if name == "demo":
        (work / name).mkdir(parents=True, exist_ok=True)
        cmd = [segrec, "run", "--out", str(run_dir)]
    else:
        meta = prepare(name, work, segrec)
        row.update({k: meta[k] for k in ("n_users", "n_items", "interactions", "fit_interactions")})
        cmd = [segrec, "run", "--data", meta["fit"], "--no-split", "--out", str(run_dir)]
        cmd += ["--items", meta["items"]] if meta["items"] else []
        cmd += ["--users", meta["users"]] if meta["users"] else []
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    # a first run is cold: no item-text embeddings cached from an earlier run
    subprocess.run(["rm", "-rf", str(Path.home() / ".cache" / "segrec")], check=True)
    row["uptime_before"] = uptime()
    print(f"{name}: {' '.join(cmd)}\n  {row['uptime_before']}", flush=True)
    row.update(timed(cmd, log, timeout))
    peak_memory(row, run_dir)
    row["uptime_after"] = uptime()
    row["served"] = served_system(run_dir)
    row["log_tail"] = log.read_text(errors="replace").splitlines()[-60:]
    if name != "demo" and row["rc"] == 0:
        test = pd.read_csv(meta["test"], dtype={"user_id": str, "item_id": str})
        users_file = work / name / "test_users.txt"
        users_file.write_text("\n".join(test["user_id"].astype(str).unique()) + "\n")
        recs_file = work / name / "recs.csv"
        subprocess.run([segrec, "recommend", str(run_dir), "--users", str(users_file), "--k", "10",
                        "--out", str(recs_file)], check=True)
        recs = pd.read_csv(recs_file, dtype={"user_id": str, "item_id": str})
        row["served_test_ndcg@10"], row["test_users"] = ndcg_at_10(recs, test)
    print(f"  wall {row['wall_s']} s, peak RSS {row['peak_rss_gb']} GB, rc {row['rc']}, "
          f"served {row['served']}, test NDCG@10 {row.get('served_test_ndcg@10')}\n  {row['uptime_after']}",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml-100k,amazon-scientific,synth-ecommerce,synth-microvideo,demo")
    ap.add_argument("--segrec", default=str(Path(sys.executable).with_name("segrec")))
    ap.add_argument("--work", default="/tmp/segrec-bench-pipeline")
    ap.add_argument("--label", default="after", help="row label, e.g. before / after")
    ap.add_argument("--timeout", type=float, default=3 * 3600)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_pipeline.json"))
    args = ap.parse_args()
    work = Path(args.work)
    rows = []
    for name in args.datasets.split(","):
        if name in REAL and not REAL[name].exists():
            print(f"{name}: {REAL[name]} absent, skipped")
            continue
        row = bench_one(name, work, args.segrec, args.timeout)
        row["label"] = args.label
        row["code"] = os.environ.get("PYTHONPATH") or git_commit()
        rows.append(row)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"rows": []}
    keep = [r for r in old.get("rows", []) if not (r.get("label") == args.label
                                                     and r["dataset"] in {x["dataset"] for x in rows})]
    payload = {"commit": git_commit(), "pythonpath": os.environ.get("PYTHONPATH"), "rows": keep + rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    table = pd.DataFrame(payload["rows"])
    cols = [c for c in ("label", "dataset", "n_users", "n_items", "fit_interactions", "wall_s",
                        "peak_rss_gib", "peak_rss_gb", "served", "served_test_ndcg@10", "rc") if c in table]
    print(table[cols].to_string(index=False))


if __name__ == "__main__":
    main()
