"""Every hostile CLI case of issue 16 through the installed ``segrec`` command, with counts.

    python benchmarks/hostile_suite.py            # all cases of tests/reliability/hostile_cases.py
    python benchmarks/hostile_suite.py --kind artifacts

CI runs every case in-process and only the process-level ones through the console script
(tests/reliability/test_hostile_cli.py), to stay fast; this script runs all of them as a
user would, one ``segrec`` process each, and checks the same rule: exit 0, or exit 2 with
one ``segrec: error:`` line, no traceback, no signal, no half-written output. Prints a
table of outcomes per kind; writes benchmarks/results/hostile_suite.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))

from hostile_cases import CASES, build_workspace, check_outcome, skip_reason  # noqa: E402

from _common import git_commit  # noqa: E402

SEGREC = Path(sys.executable).with_name("segrec")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("files", "flags", "toml", "artifacts"))
    ap.add_argument("--out", default=str(HERE / "results" / "hostile_suite.json"))
    args = ap.parse_args()
    cases = [c for c in CASES if args.kind in (None, c.kind)]
    outcomes: Counter[str] = Counter()
    failures, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ws = build_workspace(Path(tmp) / "ws")
        for n, case in enumerate(cases):
            if (why := skip_reason(case)) is not None:
                outcomes[f"{case.kind}: skipped"] += 1
                print(f"skip {case.name}: {why}")
                continue
            case_dir = Path(tmp) / f"case-{n}"
            case_dir.mkdir()
            if case.prepare is not None:
                case.prepare(ws, case_dir)
            start = time.perf_counter()
            done = subprocess.run([str(SEGREC), *case.args(ws, case_dir)], cwd=case_dir, capture_output=True,
                                  text=True, timeout=300, env=os.environ)
            seconds.append(time.perf_counter() - start)
            try:
                if done.returncode < 0:
                    raise AssertionError(f"{case.name}: killed by signal {-done.returncode}")
                outcomes[f"{case.kind}: {check_outcome(case, done.returncode, done.stderr, case_dir)}"] += 1
            except AssertionError as exc:
                outcomes[f"{case.kind}: FAILED"] += 1
                failures.append({"case": case.name, "why": str(exc)[:600]})
                print(f"FAILED {exc}")
    kinds = sorted({c.kind for c in cases})
    print(f"\n{'kind':10} {'cases':>5} {'exit 0':>7} {'exit 2, one line':>17} {'skipped':>8} {'failed':>7}")
    for kind in kinds:
        row = [sum(1 for c in cases if c.kind == kind), outcomes[f"{kind}: exit 0"],
               outcomes[f"{kind}: exit 2, one line"], outcomes[f"{kind}: skipped"],
               outcomes[f"{kind}: FAILED"]]
        print(f"{kind:10} {row[0]:5d} {row[1]:7d} {row[2]:17d} {row[3]:8d} {row[4]:7d}")
    print(f"{'total':10} {len(cases):5d}; {sum(seconds):.0f} s in {len(seconds)} segrec processes")
    result = {"benchmark": "hostile_suite", "commit": git_commit(), "cases": len(cases),
              "outcomes": dict(sorted(outcomes.items())), "failures": failures,
              "seconds_total": round(sum(seconds), 1)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
