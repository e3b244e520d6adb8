"""Issue 16 items 1-5: data loss and trust. Each test here failed on main before the fix.

1. ``--out`` must never delete a user's files; 2. manifest paths stay inside the run
directory; 3. the checksums cannot be switched off by editing the manifest; 4. crafted
tensors are one clear error, never a segfault or a server that 500s on every request;
5. the reload endpoint is validated, off without a key, and a public bind needs a key.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from tamper import edit_manifest, edit_tensors, rehash, segrec_cli

from segrec.artifacts import load_run
from segrec.cli import main
from segrec.errors import SegrecError

CHEAP = ["--systems", "popularity", "--segments", "2", "--quiet"]


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trust-data") / "log.csv"
    rng = np.random.default_rng(0)
    pairs = zip(rng.integers(0, 30, 300), rng.integers(0, 20, 300), strict=True)
    rows = [f"u{u},i{i},1,{t}" for t, (u, i) in enumerate(pairs)]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segrec: error:"), err
    return err[0]


# ------------------------------------------------------------------------------ 1. --out
def test_out_holding_user_files_is_refused_and_kept(data_csv, tmp_path, capsys):
    out = tmp_path / "extra" / "userdir"
    (out / "sub").mkdir(parents=True)
    (out / "precious.txt").write_text("mine")
    (out / "sub" / "thesis.tex").write_text("years of work")
    assert main(["run", "--data", str(data_csv), "--out", str(out), *CHEAP]) == 2
    assert "segrec did not write" in _error_line(capsys)
    assert (out / "precious.txt").read_text() == "mine"
    assert (out / "sub" / "thesis.tex").read_text() == "years of work"


def test_out_naming_a_file_is_refused_before_any_work(data_csv, tmp_path, capsys):
    target = tmp_path / "existing.csv"
    target.write_text("a,b\n1,2\n")
    start = time.perf_counter()
    assert main(["run", "--data", str(data_csv), "--out", str(target), *CHEAP]) == 2
    assert "is a file" in _error_line(capsys)
    assert target.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.csv"]  # no hidden .tmp-* copy
    assert time.perf_counter() - start < 60  # refused up front, not after the fit (a loose bound)


def test_out_dot_is_refused_before_the_fit(data_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--data", str(data_csv), "--out", ".", *CHEAP]) == 2
    assert "current directory" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_previous_run_is_replaced_only_with_overwrite(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(data_csv), "--out", str(out), *CHEAP]) == 0
    first = json.loads((out / "manifest.json").read_text())["created_at"]
    capsys.readouterr()
    assert main(["run", "--data", str(data_csv), "--out", str(out), *CHEAP]) == 2
    assert "--overwrite" in _error_line(capsys)
    assert main(["run", "--data", str(data_csv), "--out", str(out), "--overwrite", *CHEAP]) == 0
    assert json.loads((out / "manifest.json").read_text())["created_at"] != first
    assert load_run(out).system("popularity").n_items == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old run is gone, nothing else


def test_a_previous_run_with_a_user_file_inside_is_not_replaced(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(data_csv), "--out", str(out), *CHEAP]) == 0
    (out / "notes.md").write_text("my notes")
    capsys.readouterr()
    assert main(["run", "--data", str(data_csv), "--out", str(out), "--overwrite", *CHEAP]) == 2
    assert "notes.md" in _error_line(capsys)
    assert (out / "notes.md").read_text() == "my notes"


def test_empty_directory_is_a_fine_out(data_csv, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["run", "--data", str(data_csv), "--out", str(out), *CHEAP]) == 0
    assert (out / "manifest.json").is_file()


# ----------------------------------------------------------------------- 2. confinement
def test_manifest_path_outside_the_run_is_no_size_oracle(run_copy):
    outside = run_copy.parent.parent / "secret.txt"
    outside.write_text("x" * 1294)
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["files"]["../../secret.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegrecError) as info:
        load_run(run_copy)
    assert "1294" not in str(info.value) and "not a plain relative path" in str(info.value)


def test_manifest_path_outside_with_the_right_checksum_is_refused(run_copy):
    import hashlib

    outside = run_copy.parent.parent / "secret.txt"
    outside.write_text("hello")
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["files"]["../../secret.txt"] = {"sha256": hashlib.sha256(b"hello").hexdigest(), "bytes": 5}
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegrecError, match="not a plain relative path"):
        load_run(run_copy)


@pytest.mark.parametrize("name", ["../../outside_model", "ABSOLUTE"])
def test_system_name_pointing_outside_is_refused(run_copy, name):
    outside = run_copy.parent / "outside_model"  # = run/systems/../../outside_model
    shutil.copytree(run_copy / "systems" / "ease", outside)
    if name == "ABSOLUTE":
        name = str(outside)
    edit_manifest(run_copy, systems=["ease", "popularity", name], best_system=name)
    with pytest.raises(SegrecError):
        load_run(run_copy).system()
    with pytest.raises(SegrecError):
        load_run(run_copy).router(name)


def test_symlink_out_of_the_run_is_refused(run_copy):
    target = run_copy / "systems" / "ease" / "tensors.safetensors"
    outside = run_copy.parent.parent / "elsewhere.safetensors"
    shutil.copy(target, outside)  # same bytes, so the checksum alone would accept it
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(SegrecError, match="symbolic link"):
        load_run(run_copy).system("ease")


def test_sub_model_name_in_model_json_cannot_leave_the_run(run_copy):
    """A crafted model.json (re-hashed) naming a sub-model ../../: reads stay inside the run."""
    n_users = len(load_run(run_copy).segments())
    outside = run_copy.parent / "x"
    shutil.copytree(run_copy / "systems" / "ease", outside)  # a loadable model, outside the run
    model_json = run_copy / "systems" / "ease" / "model.json"
    info = json.loads(model_json.read_text())
    # SegmentedRecommender loads each tier from tiers/<name>: this name climbs out of the run
    info.update({"class": "segmented", "config": {}, "meta": {"tiers": ["../../../../x"], "routing": {}}})
    model_json.write_text(json.dumps(info))
    tensors = run_copy / "systems" / "ease" / "tensors.safetensors"
    edit_tensors(tensors, **{"state.segments": np.zeros(n_users, np.int64)})
    rehash(run_copy, "systems/ease/model.json", "systems/ease/tensors.safetensors")
    with pytest.raises(SegrecError, match="outside the artifact directory"):
        load_run(run_copy).system("ease")


# ------------------------------------------------------------------------- 3. checksums
def test_manifest_without_files_is_refused(run_copy):
    edit_manifest(run_copy, files=None)
    with pytest.raises(SegrecError, match="no file checksums"):
        load_run(run_copy)


def test_empty_files_table_and_a_flipped_tensor_byte_is_refused(run_copy):
    f = run_copy / "systems" / "ease" / "tensors.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    edit_manifest(run_copy, files={})
    with pytest.raises(SegrecError):
        load_run(run_copy).system("ease")


def test_a_file_dropped_from_the_manifest_is_not_read(run_copy):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    del manifest["files"]["systems/ease/tensors.safetensors"]
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegrecError, match="not listed in manifest.json"):
        load_run(run_copy).system("ease")


# -------------------------------------------------------------------- 4. crafted tensors
def test_seen_indices_past_the_catalogue_are_exit_2_not_a_segfault(run_copy):
    from safetensors.numpy import load_file

    rel = "systems/ease/tensors.safetensors"
    seen = load_file(str(run_copy / rel))["seen_indices"]
    edit_tensors(run_copy / rel, seen_indices=(seen + 10_000_000).astype(np.int32))
    rehash(run_copy, rel)
    done = segrec_cli("recommend", str(run_copy), "--system", "ease", "--user", "u0", "--k", "5")
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "seen_indices" in lines[0]


@pytest.mark.parametrize("change", ["ease-shape", "ease-nan", "popularity-short", "indptr"])
def test_crafted_tensors_fail_at_load_with_one_error(run_copy, change):
    from safetensors.numpy import load_file

    system = "popularity" if change.startswith("popularity") else "ease"
    rel = f"systems/{system}/tensors.safetensors"
    tensors = load_file(str(run_copy / rel))
    if change == "ease-shape":
        w = tensors["state.weights"]
        edit_tensors(run_copy / rel, **{"state.weights": np.ascontiguousarray(w[:, :-1])})
    elif change == "ease-nan":
        w = tensors["state.weights"].copy()
        w[0, 0] = np.nan
        edit_tensors(run_copy / rel, **{"state.weights": w})
    elif change == "popularity-short":
        edit_tensors(run_copy / rel, **{"state.counts": tensors["state.counts"][:3]})
    else:
        indptr = tensors["seen_indptr"].copy()
        indptr[1] = indptr[-1] + 5
        edit_tensors(run_copy / rel, seen_indptr=indptr)
    rehash(run_copy, rel)
    with pytest.raises(SegrecError):
        load_run(run_copy).router(system)


def test_wrong_shaped_tensors_never_start_a_server_that_500s(run_copy):
    pytest.importorskip("fastapi")
    from segrec.serve import create_app

    rel = "systems/ease/tensors.safetensors"
    from safetensors.numpy import load_file

    w = load_file(str(run_copy / rel))["state.weights"]
    edit_tensors(run_copy / rel, **{"state.weights": np.ascontiguousarray(w[:-2, :])})
    rehash(run_copy, rel)
    with pytest.raises(SegrecError):
        create_app(run_copy, system="ease")


# ------------------------------------------------------------------------------ 5. reload
@pytest.fixture
def client_for():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from segrec.serve import create_app

    clients = []

    def make(path, **kwargs):
        client = TestClient(create_app(path, **kwargs), raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def test_reload_is_off_without_an_api_key(client_for, run_copy):
    client = client_for(run_copy, system="ease")
    assert client.post("/v1/admin/reload", json={}).status_code == 404


@pytest.mark.parametrize("path", ["x" * 5000, "a/" * 600, "bad\x00name", "/etc", "../../..", "/nonexistent"])
def test_reload_refuses_bad_paths_with_a_4xx(client_for, run_copy, path):
    client = client_for(run_copy, system="ease", api_key="k")
    r = client.post("/v1/admin/reload", json={"path": path}, headers={"X-API-Key": "k"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"] in ("invalid_request", "invalid_value")
    assert client.post("/v1/recommend", json={"user_id": "u0", "k": 3},
                       headers={"X-API-Key": "k"}).status_code == 200  # still serving


def test_reload_of_broken_artifacts_is_422_and_keeps_serving(client_for, run_copy, saved_run):
    client = client_for(run_copy, system="ease", api_key="k")
    broken = {}
    for kind in ("no-files", "outside", "tensor"):
        target = Path(shutil.copytree(saved_run, run_copy.parent / f"broken-{kind}"))
        if kind == "no-files":
            edit_manifest(target, files=None)
        elif kind == "outside":
            edit_manifest(target, systems=["../../x"], best_system="../../x")
        else:
            from safetensors.numpy import load_file

            rel = "systems/ease/tensors.safetensors"
            seen = load_file(str(target / rel))["seen_indices"]
            edit_tensors(target / rel, seen_indices=(seen + 999).astype(np.int32))
            rehash(target, rel)
        broken[kind] = client.post("/v1/admin/reload", json={"path": str(target)}, headers={"X-API-Key": "k"})
    assert {k: r.status_code for k, r in broken.items()} == {"no-files": 422, "outside": 422, "tensor": 422}
    assert all(r.json()["error"] == "reload_failed" for r in broken.values())
    ok = client.post("/v1/admin/reload", json={"path": str(saved_run_copy(saved_run, run_copy))},
                     headers={"X-API-Key": "k"})
    assert ok.status_code == 200 and ok.json()["generation"] == 2


def saved_run_copy(saved_run, run_copy) -> Path:
    return Path(shutil.copytree(saved_run, run_copy.parent / "good"))


def test_public_bind_without_a_key_is_refused(run_copy):
    done = segrec_cli("serve", str(run_copy), "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert done.returncode == 2
    assert "--api-key-env" in done.stderr and "--insecure" in done.stderr


def test_healthz_hides_the_path_when_it_is_open_to_anyone(client_for, run_copy):
    keyed = client_for(run_copy, system="ease", api_key="k")
    assert "path" not in keyed.get("/healthz").json()
    assert os.fspath(run_copy) not in keyed.get("/healthz").text
