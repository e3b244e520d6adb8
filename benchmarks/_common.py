"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_x.py``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """Short hash of the checked-out commit, recorded in every results JSON."""
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=Path(__file__).parent).strip()
    except Exception:
        return "unknown"


def write_json(path: str | Path, record: Any, indent: int = 2) -> Path:
    """Write a results JSON atomically (temp file, then rename) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=indent))
    tmp.replace(out)
    print(f"wrote {out}")
    return out
