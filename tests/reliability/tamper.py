"""Helpers of the reliability suites: run the installed CLI, tamper with a saved run like an attacker."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: the `segrec` console script of the interpreter running the tests (what `pip install -e .` made)
SEGREC = Path(sys.executable).with_name("segrec")


def segrec_cli(*args: str, cwd: str | Path | None = None, timeout: float = 120, stdin: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``segrec`` command as a user would; text output, never raises on rc."""
    if not SEGREC.is_file():
        pytest.skip(f"no console script at {SEGREC} (pip install -e .)")
    return subprocess.run([str(SEGREC), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          input=stdin, env={**os.environ, **(env or {})})


def rehash(run_dir: Path, *changed: str) -> None:
    """Re-write the manifest's size and sha256 of ``changed`` files: what an attacker would do."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for rel in changed:
        raw = (run_dir / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(run_dir: Path, **changes) -> dict:
    """Set top-level manifest keys (None deletes one); returns the new manifest."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def edit_tensors(path: Path, **changes) -> None:
    """Replace named tensors of a safetensors file (numpy arrays)."""
    from safetensors.numpy import load_file, save_file

    tensors = dict(load_file(str(path)))
    tensors.update(changes)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
