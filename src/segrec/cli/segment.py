"""``segrec segment``: segment the users of an interaction file, print profiles and quality.

Example:
    segrec segment --data interactions.csv --items items.csv --method kmeans --k auto --out seg.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ._args import k_or_auto, non_negative_int

__all__ = ["add_parser", "segment_command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec segment``."""
    from ..segment.api import METHODS

    p = sub.add_parser(
        "segment",
        help="segment users; print profiles and quality; write the assignment",
        description="Build user features (behaviour, demographics, item-text profile, SVD) "
        "from the whole file, segment the users, print one profile line per "
        "segment and the quality figures, and write user_id,segment to --out.",
    )
    p.add_argument("--data", required=True, help="interactions file (CSV/Parquet/MovieLens)")
    p.add_argument("--items", help="items table (item_id,title,categories,...)")
    p.add_argument("--users", help="users table (user_id, attributes...)")
    p.add_argument("--user-col", metavar="NAME", help="column of user ids in --data (default user_id)")
    p.add_argument("--item-col", metavar="NAME", help="column of item ids in --data (default item_id)")
    p.add_argument("--time-col", metavar="NAME", help="column of times in --data (default timestamp)")
    p.add_argument("--rating-col", metavar="NAME", help="column of ratings in --data (default rating)")
    p.add_argument("--method", default="kmeans", choices=METHODS, help="segmenter (default: %(default)s)")
    p.add_argument("--k", default="auto", type=k_or_auto,
                   help="number of segments (>= 1) or 'auto' (default: %(default)s)")
    p.add_argument(
        "--criterion",
        default="silhouette",
        choices=["silhouette", "davies_bouldin", "calinski_harabasz", "stability", "downstream"],
        help="how 'auto' chooses K / the method (default: %(default)s)",
    )
    p.add_argument(
        "--features",
        help="comma-separated blocks: behavior,demographics,text,svd (default: all that the data supports)",
    )
    p.add_argument(
        "--embedder",
        default="minilm",
        choices=["minilm", "hashing", "none"],
        help="item-text encoder: the bundled all-MiniLM-L6-v2 (offline), a hashing stand-in, "
        "or no text block (default: %(default)s)",
    )
    p.add_argument("--model-path", help="local sentence-transformers model directory (instead of MiniLM)")
    p.add_argument("--embedding-cache", help="directory to cache item-text embeddings in")
    p.add_argument(
        "--reassign",
        action="store_true",
        help="optimise the segments for recommendation (GLSLIM-style moves; slower)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", help="write user_id,segment here (.csv, or .parquet)")
    p.add_argument("--save", help="also save the Segmentation artifact to this directory")
    p.set_defaults(func=segment_command)


def _embedder(args: argparse.Namespace):
    from ..features import HashingEmbedder, SentenceTransformerEmbedder

    if args.embedder == "hashing":
        return HashingEmbedder(64)
    if args.model_path:
        return SentenceTransformerEmbedder(args.model_path)
    return None  # MiniLM when installed (default_features decides), or none


def segment_command(args: argparse.Namespace) -> int:
    """Run ``segrec segment``; returns the exit code."""
    from ..data import load_interactions
    from ..data.schema import Schema
    from ..data.validate import check_usable
    from ..errors import ConfigError
    from ..features import FeaturePipeline, FeaturesConfig
    from ..segment import SegmentationPipeline, profile_segments, reassign_segmentation

    k = args.k
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a directory; pass a file name such as segments.csv")
    columns = {"user": args.user_col, "item": args.item_col, "timestamp": args.time_col,
               "rating": args.rating_col}
    columns = {f: c for f, c in columns.items() if c}
    data = load_interactions(args.data, schema=Schema(**columns) if columns else None, items=args.items,
                             users=args.users)
    check_usable(data, split=False)
    text = args.embedder != "none"
    embedder = _embedder(args) if text else None
    features = None
    if args.features:
        blocks = tuple(b.strip() for b in args.features.split(",") if b.strip())
        try:
            cfg = FeaturesConfig(blocks=blocks)
        except ValueError as exc:
            raise ConfigError(
                f"--features: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}"
            ) from exc
        features = FeaturePipeline(cfg, embedder=embedder, cache_dir=args.embedding_cache)
    pipe = SegmentationPipeline.build(
        args.method, n_segments=k, random_state=args.seed, features=features, criterion=args.criterion
    )
    pipe.fit(data, text=text, embedder=embedder, cache_dir=args.embedding_cache)
    seg = pipe.segmentation_
    if args.reassign:
        seg = reassign_segmentation(seg, data, pipe.features_)
    out = sys.stdout
    print(
        f"{data.n_users} users, {data.n_items} items, {len(data)} interactions; features: "
        f"{', '.join(pipe.features_.blocks)} ({pipe.features_.n_features} columns)",
        file=out,
    )
    print(
        f"method {seg.method}, {seg.n_segments} segments; "
        + ", ".join(f"{name} {value:.4f}" for name, value in seg.metrics.items()),
        file=out,
    )
    if "reassignment" in seg.extra:
        r = seg.extra["reassignment"]
        print(
            f"reassignment: held-out NDCG@10 {r['heldout_before']:.4f} -> {r['heldout_after']:.4f} "
            f"(global EASE {r['heldout_global']:.4f}); {r['moved_total']} users moved",
            file=out,
        )
    for p in profile_segments(seg.labels, data, names=seg.names):
        print("  " + p.description, file=out)
    if args.out:
        frame = pd.DataFrame({"user_id": data.user_vocab.ids.astype(str), "segment": seg.labels})
        from ..io import atomic_write_text

        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            atomic_write_text(path, frame.to_csv(index=False))  # never a half-written file
        print(f"wrote {len(frame)} assignments to {path}", file=out)
    if args.save:
        seg.save(args.save)
    return 0

