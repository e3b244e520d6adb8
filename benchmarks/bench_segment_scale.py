"""Scale: segment 1M synthetic users x 64 features into 32 segments (target: < 10 s on 2 cores).

    python benchmarks/bench_segment_scale.py [--users 1000000] [--features 64] [--k 32] [--algorithm sample]

Times ``KMeansSegmenter.fit`` end to end (validation, sampled k-means++ fit, full-data
Lloyd passes, canonical labels, quality metrics on a 5k sample), compares against
scikit-learn's MiniBatchKMeans in the same process, and reports ARI to the planted
clusters. Writes benchmarks/results/bench_segment_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "bench_segment_scale.json"


def make_data(n_users: int, n_features: int, k: int, seed: int = 0):
    """Gaussian blobs: k planted centres, unit noise, float32."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, n_features)).astype(np.float32) * 3
    truth = rng.integers(0, k, n_users)
    x = centers[truth] + rng.standard_normal((n_users, n_features), dtype=np.float32)
    return x, truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument(
        "--baseline", default="minibatch", help="comparison back-end in the same process ('' = none)"
    )
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    from sklearn.metrics import adjusted_rand_score

    from segrec.segment import KMeansSegmenter

    x, truth = make_data(args.users, args.features, args.k)
    rows = []
    for algo in [args.algorithm] + ([args.baseline] if args.baseline else []):
        start = time.perf_counter()
        seg = KMeansSegmenter(n_segments=args.k, algorithm=algo, random_state=0).fit(x)
        seconds = time.perf_counter() - start
        sample = np.random.default_rng(1).choice(len(x), 200_000, replace=False)
        rows.append(
            {
                "algorithm": algo,
                "seconds": round(seconds, 3),
                "ari": round(adjusted_rand_score(truth[sample], seg.labels_[sample]), 4),
                "silhouette": round(seg.segmentation_.metrics["silhouette"], 4),
                "segments": seg.n_segments_,
            }
        )
    base = rows[0]["seconds"]
    print(f"{args.users} users x {args.features} features -> {args.k} segments")
    print(f"{'algorithm':>10} {'seconds':>8} {'ratio':>6} {'ARI':>6} {'silhouette':>10}")
    for r in rows:
        print(
            f"{r['algorithm']:>10} {r['seconds']:>8.2f} {r['seconds'] / base:>6.2f} {r['ari']:>6.3f} "
            f"{r['silhouette']:>10.3f}"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                "commit": commit,
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(),
                },
                "parameters": vars(args),
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
