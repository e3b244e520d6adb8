"""File fuzzing at scale (issue 16): thousands of hypothesis-generated files through ``load_interactions``.

    python benchmarks/bench_fuzz_files.py                 # 3000 CSV + 3000 Parquet + 2000 raw-byte files
    python benchmarks/bench_fuzz_files.py --csv 300 --raw 100

CI runs the same generators with 300 cases each (tests/reliability/test_hostile_files.py);
this script runs them with far more, unseeded (new files every run), plus a third
generator of raw bytes: binary noise, compressed and UTF-16 payloads, Parquet magic,
BOMs, NULs and valid CSV lines mixed. CSV and Parquet files are checked against the
independent pandas oracle of the test module (a load must give exactly the rows it
says, or a DataValidationError when it says the file is invalid); raw files must load
or raise DataValidationError, nothing else. A failure is a finding: the falsifying
file is printed and kept in the JSON. Prints a table; writes
benchmarks/results/bench_fuzz_files.json.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))


def _examples(argv: list[str]) -> int:
    """--csv N (default 3000): the test module reads its example count when it is imported."""
    return int(argv[argv.index("--csv") + 1]) if "--csv" in argv else 3000


os.environ["SEGREC_FUZZ_EXAMPLES"] = str(_examples(sys.argv))

import test_hostile_files as fuzz  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _common import git_commit  # noqa: E402
from segrec.data import load_interactions  # noqa: E402
from segrec.errors import DataValidationError  # noqa: E402

RAW: Counter[str] = Counter()

_payload = st.one_of(
    st.binary(min_size=0, max_size=300),
    st.sampled_from([b"user_id,item_id\nu1,i1\nu2,i2\n", b"user_id,item_id,rating,timestamp\nu,i,1,2\n",
                     b"a\tb\n1\t2\n", b"1::2::3::4\n"]),
)
_wrap = st.sampled_from(["none", "gzip", "bz2", "utf16", "utf16le", "bom", "par1", "nul", "latin1"])


def _wrapped(kind: str, body: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(body)
    if kind == "bz2":
        return bz2.compress(body)
    if kind == "utf16":
        return body.decode("latin-1").encode("utf-16")
    if kind == "utf16le":
        return body.decode("latin-1").encode("utf-16-le")
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "par1":
        return b"PAR1" + body
    if kind == "nul":
        return body[: len(body) // 2] + b"\x00" + body[len(body) // 2:]
    if kind == "latin1":
        return body + "caf\u00e9,\u00e9t\u00e9\n".encode("latin-1")
    return body


@given(body=_payload, kind=_wrap, name=st.sampled_from(["x.csv", "x.parquet", "u.data", "x.tsv", "x"]))
def raw_files(body: bytes, kind: str, name: str) -> None:
    """Any bytes under any name: loads, or one DataValidationError; never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(_wrapped(kind, body))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_interactions(path)
            RAW[f"raw {kind}: loaded"] += 1
        except DataValidationError as exc:
            text = str(exc)
            assert "\x00" not in text and len(text) < 4000, f"unreadable message: {text[:300]!r}"
            RAW[f"raw {kind}: rejected"] += 1


def _run(name: str, test, n: int) -> dict:
    runner = test if name != "raw bytes" else settings(
        max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))(test)
    start = time.perf_counter()
    finding = None
    try:
        runner()
    except Exception as exc:  # hypothesis re-raises the failing example's error after shrinking
        finding = f"{type(exc).__name__}: {str(exc)[:1500]}"
    seconds = round(time.perf_counter() - start, 1)
    return {"generator": name, "asked": n, "seconds": seconds, "finding": finding}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=int, default=3000, help="examples per oracle generator (CSV and Parquet)")
    ap.add_argument("--raw", type=int, default=2000)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_fuzz_files.json"))
    args = ap.parse_args()
    rows = [
        _run("csv (oracle)", fuzz.test_hostile_csv_loads_correctly_or_raises_data_validation_error, args.csv),
        _run("parquet (oracle)", fuzz.test_hostile_parquet_loads_correctly_or_raises_data_validation_error,
             args.csv),
        _run("raw bytes", raw_files, args.raw),
    ]
    counts = Counter(fuzz.CASES) + RAW
    by_generator = {"csv (oracle)": sum(v for k, v in counts.items() if k.startswith("csv")),
                    "parquet (oracle)": sum(v for k, v in counts.items() if k.startswith("parquet")),
                    "raw bytes": sum(v for k, v in counts.items() if k.startswith("raw"))}
    print(f"{'generator':18} {'asked':>6} {'files':>6} {'seconds':>8}  finding")
    for r in rows:
        r["files"] = by_generator[r["generator"]]
        finding = r["finding"] or "none"
        print(f"{r['generator']:18} {r['asked']:6d} {r['files']:6d} {r['seconds']:8.1f}  {finding}")
    total = sum(r["files"] for r in rows)
    print(f"{'total':18} {'':6} {total:6d}")
    print("outcomes:", dict(sorted(counts.items())))
    result = {"benchmark": "bench_fuzz_files", "commit": git_commit(), "python": platform.python_version(),
              "files": total, "rows": rows, "outcomes": dict(sorted(counts.items()))}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if any(r["finding"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
