"""Leftovers of interrupted saves: which ``sweep_stale`` removes and which it must keep."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from segrec.io import STALE_AFTER_S, atomic_dir, sweep_stale


def _leftover(parent, name, pid=None):
    """A ``.name.tmp-*`` directory as a killed save leaves it, with an owner file naming ``pid``."""
    tmp = parent / f".{name}.tmp-abc123"
    tmp.mkdir()
    (tmp / "half.json").write_text("{")
    if pid is not None:
        (parent / f"{tmp.name}.owner").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    return tmp


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_of_a_dead_process_is_swept(tmp_path):
    tmp = _leftover(tmp_path, "art", pid=_dead_pid())
    assert sweep_stale(tmp_path / "art") == [tmp]
    assert list(tmp_path.iterdir()) == []


def test_save_in_progress_in_a_live_process_is_kept(tmp_path):
    tmp = _leftover(tmp_path, "art", pid=os.getpid())
    assert sweep_stale(tmp_path / "art", now=time.time() + 10 * STALE_AFTER_S) == []
    assert tmp.is_dir()


def test_leftover_without_owner_is_kept_until_old(tmp_path):
    tmp = _leftover(tmp_path, "art")
    assert sweep_stale(tmp_path / "art") == []
    assert sweep_stale(tmp_path / "art", now=time.time() + 2 * STALE_AFTER_S) == [tmp]


def test_old_copy_is_kept_while_it_is_the_only_copy(tmp_path):
    old = tmp_path / ".art.old-1234abcd"
    old.mkdir()
    later = time.time() + 2 * STALE_AFTER_S
    assert sweep_stale(tmp_path / "art", now=later) == []  # "art" itself is missing
    (tmp_path / "art").mkdir()
    assert sweep_stale(tmp_path / "art", now=later) == [old]


def test_other_artifacts_leftovers_are_not_touched(tmp_path):
    other = _leftover(tmp_path, "art2", pid=_dead_pid())
    assert sweep_stale(tmp_path / "art") == []
    assert other.is_dir()


def test_a_save_sweeps_first_and_leaves_only_the_artifact(tmp_path):
    _leftover(tmp_path, "art", pid=_dead_pid())
    with atomic_dir(tmp_path / "art") as tmp:
        assert (tmp_path / f"{tmp.name}.owner").is_file()  # while saving, the owner is named
        (tmp / "a.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert (tmp_path / "art" / "a.json").is_file()


def test_save_tensors_streams_the_same_bytes_as_safetensors(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from segrec.io import load_tensors, save_tensors

    rng = np.random.default_rng(0)
    tensors = {"w": rng.random((5, 3), dtype=np.float32), "idx": np.arange(7, dtype=np.int64),
               "ptr": np.arange(4, dtype=np.int32), "d": rng.random(2), "flag": np.array([True, False]),
               "empty": np.zeros((0, 4), np.float32), "t": rng.random((3, 4), dtype=np.float32).T,
               "scalar": np.array(3.5, np.float32), "h": np.ones(3, np.float16), "u": np.ones(2, np.uint8)}
    save_tensors(tmp_path / "ours.safetensors", tensors)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_path / "ref.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    back = load_tensors(tmp_path / "ours.safetensors")
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype and back[k].shape == np.ascontiguousarray(v).shape  # as before


def test_check_replaceable_refuses_what_segrec_did_not_write(tmp_path, monkeypatch):
    import pytest

    from segrec.errors import SegrecError
    from segrec.io import check_replaceable

    assert check_replaceable(tmp_path / "new") == "new"
    (tmp_path / "empty").mkdir()
    assert check_replaceable(tmp_path / "empty") == "empty"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    assert check_replaceable(tmp_path / "model") == "artifact"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    (tmp_path / "file.csv").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "model")
    for name, says in (("mine", "did not write"), ("file.csv", "is a file"), ("link", "symbolic link")):
        with pytest.raises(SegrecError, match=says):
            check_replaceable(tmp_path / name)
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(SegrecError, match="current directory"):
        check_replaceable(".")
    with pytest.raises(SegrecError, match="did not write"):
        with atomic_dir(tmp_path / "mine") as tmp:
            (tmp / "model.json").write_text("{}")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine.tmp-")]


def test_confined_reads(tmp_path):
    import pytest

    from segrec.errors import SegrecError
    from segrec.io import confined_reads, read_json

    root = tmp_path / "run"
    (root / "sub").mkdir(parents=True)
    (root / "a.json").write_text("1")
    (root / "b.json").write_text("2")
    (tmp_path / "out.json").write_text("3")
    (root / "sub" / "link.json").symlink_to(tmp_path / "out.json")
    with confined_reads(root, {"a.json", "sub/link.json"}):
        assert read_json(root / "a.json") == 1
        with pytest.raises(SegrecError, match="not listed"):
            read_json(root / "b.json")
        with pytest.raises(SegrecError, match="outside the artifact directory"):
            read_json(root / "sub" / ".." / ".." / "out.json")
        with pytest.raises(SegrecError, match="symbolic link"):
            read_json(root / "sub" / "link.json")
    assert read_json(tmp_path / "out.json") == 3  # outside the context: no rule
