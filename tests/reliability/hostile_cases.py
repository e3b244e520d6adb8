"""The hostile-input cases of issue 16: files, flags, TOML and artifacts, as one table.

Every case is a ``segrec`` command line run in a fresh directory; it must end in exit 0,
or exit 2 with exactly one line ``segrec: error: ...`` on stderr, and never leave a
half-written ``--out``. ``tests/reliability/test_hostile_cli.py`` runs all of them
in-process (fast) and a subset through the installed console script;
``benchmarks/hostile_suite.py`` runs all of them through the console script and prints
the counts. ``build_workspace`` writes the shared inputs once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tamper import edit_manifest, edit_tensors, rehash

CHEAP = ("--systems", "popularity", "--segments", "2", "--quiet")


@dataclass(frozen=True)
class Case:
    """One hostile command line: ``argv`` ({ws} = the workspace, {case} = this case's own folder)."""

    name: str
    kind: str
    argv: tuple[str, ...]
    expect: tuple[int, ...] = (2,)
    prepare: Callable[[Path, Path], None] | None = None
    #: a substring the error line must contain (what the user is told to do)
    says: str | None = None
    #: run through the console script in CI too (process-level failures: aborts, segfaults)
    console: bool = False
    extra: dict = field(default_factory=dict)

    def args(self, ws: Path, case: Path) -> list[str]:
        """The command line with its placeholders filled in."""
        return [a.replace("{ws}", str(ws)).replace("{case}", str(case)) for a in self.argv]


def _log(n_users: int = 30, n_items: int = 20, n: int = 300, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = [f"u{u},i{i},{r},{t}" for t, (u, i, r) in enumerate(zip(
        rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(1, 6, n), strict=True))]
    return "user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n"


def build_workspace(ws: Path) -> Path:
    """Write every shared input file and a saved run into ``ws``; returns ``ws``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws.mkdir(parents=True, exist_ok=True)
    good = _log()
    (ws / "good.csv").write_text(good)
    raw = good.encode()
    (ws / "empty.csv").write_bytes(b"")
    (ws / "header.csv").write_text("user_id,item_id,rating,timestamp\n")
    (ws / "newlines.csv").write_text("\n\n\n")
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)
    (ws / "garbage.bin").write_bytes(noise.tobytes())
    (ws / "log.csv.gz").write_bytes(gzip.compress(raw))
    (ws / "gz-named.csv").write_bytes(gzip.compress(raw))
    (ws / "log.csv.bz2").write_bytes(bz2.compress(raw))
    (ws / "log.csv.xz").write_bytes(lzma.compress(raw))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("log.csv", good)
    (ws / "log.zip").write_bytes(buf.getvalue())
    (ws / "utf16.csv").write_bytes(good.encode("utf-16"))
    (ws / "utf16le.csv").write_bytes(good.encode("utf-16-le"))
    (ws / "latin1.csv").write_bytes(good.replace("i3,", "caf\u00e9,").encode("latin-1"))
    lines = good.splitlines()
    (ws / "nul-id.csv").write_text("\n".join([lines[0], "u\x001,i1,1,1", *lines[1:]]) + "\n")
    (ws / "wrong-fields.csv").write_text("\n".join([*lines[:4], "u1,i2", *lines[4:]]) + "\n")
    (ws / "no-item.csv").write_text("user_id,movie,rating\nu1,m1,1\nu2,m2,2\n")
    (ws / "user-item.csv").write_text(good.replace("user_id,item_id,", "user,item,"))
    (ws / "dup-header.csv").write_text(good.replace("user_id,item_id,rating,timestamp",
                                                    "user_id,item_id,item_id,timestamp"))
    bad_time = lines[:5] + ["u1,i1,1,yesterday"] + lines[6:]
    (ws / "bad-time.csv").write_text("\n".join(bad_time) + "\n")  # line 6 of the file
    (ws / "negative.csv").write_text(good.replace(",3,", ",-3,", 1))
    (ws / "inf.csv").write_text(good.replace(",3,", ",inf,", 1))
    (ws / "one-row.csv").write_text("user_id,item_id\nu1,i1\n")
    (ws / "one-item.csv").write_text("user_id,item_id\n" + "".join(f"u{u},i1\n" for u in range(10)))
    (ws / "one-user.csv").write_text("user_id,item_id\n" + "".join(f"u1,i{i}\n" for i in range(10)))
    (ws / "singletons.csv").write_text("user_id,item_id\n" + "".join(f"u{u},i{u % 7}\n" for u in range(40)))
    (ws / "crlf-bom.csv").write_bytes(b"\xef\xbb\xbf" + good.replace("\n", "\r\n").encode())
    (ws / "header-again.csv").write_text("\n".join([*lines[:10], lines[0], *lines[10:]]) + "\n")
    (ws / "huge-id.csv").write_text(good.replace("u1,", "u" + "x" * 10_000 + ",", 1))
    frame = pd.read_csv(io.StringIO(good), dtype=str)
    pq.write_table(pa.table({"user_id": [[1, 2]] * 5, "item_id": ["a"] * 5}), ws / "list-ids.parquet")
    pq.write_table(pa.table({"user_id": [{"a": 1}] * 5, "item_id": ["a"] * 5}), ws / "struct-ids.parquet")
    frame.to_parquet(ws / "parquet-named.csv", index=False)
    frame.to_parquet(ws / "good.parquet", index=False)
    (ws / "truncated.parquet").write_bytes((ws / "good.parquet").read_bytes()[:200])
    (ws / "items-garbage.csv").write_bytes(b"\x00\x01\x02" * 100)
    (ws / "users-noid.csv").write_text("uid,age\nu1,3\n")
    os.mkfifo(ws / "fifo.csv")
    (ws / "ids.txt").write_text("u1\nu2\nnobody\n")
    (ws / "ids-binary.txt").write_bytes(b"\xff\xfe\x00u\x001")
    # TOML files
    toml = {
        "binary.toml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "syntax.toml": b"[data\npath = 1",
        "k0.toml": b"[segmentation]\nn_segments = 0\n",
        "ks.toml": b"[evaluate]\nks = [0, -10]\n",
        "ratios.toml": b"[split]\nratios = [1.0, 0.0, 0.0]\n",
        "ratios-sum.toml": b"[split]\nratios = [0.5, 0.2, 0.2]\n",
        "device.toml": b'device = "tpu:99"\n',
        "epochs.toml": b"[models.transformer]\nepochs = -5\n",
        "unknown-model-key.toml": b"[models.transformer]\nepoch = 5\n",
        "unknown-top.toml": b"sed = 1\n",
        "unknown-section.toml": b"[modles]\nsystems = ['ease']\n",
        "missing-data.toml": b'[data]\npath = "nowhere.csv"\n',
        "seed.toml": b'seed = "abc"\n',
        "empty-col.toml": b'[data.columns]\nuser = ""\n',
        "encoding.toml": b'[data]\nencoding = "klingon"\n',
        "nboot.toml": b"[evaluate]\nn_boot = 10\n",
        "no-systems.toml": b"[models]\nsystems = []\n",
        "columns.toml": b'[data.columns]\nuser = "user"\nitem = "item"\n',
        "deep.toml": b"a = " + b"[" * 2000 + b"]" * 2000 + b"\n",
    }
    for name, body in toml.items():
        (ws / name).write_bytes(body)
    (ws / "conf-dir.toml").mkdir()
    # a saved run to tamper with
    from segrec.cli import main

    code = main(["run", "--data", str(ws / "good.csv"), "--systems", "popularity,ease", "--segments", "2",
                 "--out", str(ws / "run"), "--quiet"])
    assert code == 0, "could not build the hostile workspace's run"
    return ws


# ---------------------------------------------------------------- artifact tampering (prepare hooks)
def _copy_run(ws: Path, case: Path) -> Path:
    return Path(shutil.copytree(ws / "run", case / "run"))


def _t(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def prepare(ws: Path, case: Path) -> None:
        fn(ws, _copy_run(ws, case))

    return prepare


def _shift_seen(ws, run):
    from safetensors.numpy import load_file

    rel = "systems/ease/tensors.safetensors"
    seen = load_file(str(run / rel))["seen_indices"]
    edit_tensors(run / rel, seen_indices=(seen + 10**7).astype(np.int32))
    rehash(run, rel)


def _shape(ws, run):
    from safetensors.numpy import load_file

    rel = "systems/ease/tensors.safetensors"
    w = load_file(str(run / rel))["state.weights"]
    edit_tensors(run / rel, **{"state.weights": np.ascontiguousarray(w[:, :-1])})
    rehash(run, rel)


def _dtype(ws, run):
    from safetensors.numpy import load_file

    rel = "systems/ease/tensors.safetensors"
    seen = load_file(str(run / rel))["seen_indices"]
    edit_tensors(run / rel, seen_indices=seen.astype(np.float32))
    rehash(run, rel)


def _symlink(ws, run):
    f = run / "systems" / "ease" / "tensors.safetensors"
    shutil.copy(f, ws / f"outside-{run.parent.name}.safetensors")
    f.unlink()
    f.symlink_to(ws / f"outside-{run.parent.name}.safetensors")


def _passwd(ws, run):
    m = json.loads((run / "manifest.json").read_text())
    m["files"]["../../../../../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    (run / "manifest.json").write_text(json.dumps(m))


def _rewrite(rel: str, body: bytes):
    def fn(ws, run):
        (run / rel).write_bytes(body)
        rehash(run, rel)

    return fn


def _fifo(ws, run):
    os.mkfifo(run / "systems" / "ease" / "pipe")


def _huge_header(ws, run):
    rel = "systems/ease/tensors.safetensors"
    header = json.dumps({"seen_indptr": {"dtype": "I64", "shape": [10**12], "data_offsets": [0, 8 * 10**12]}})
    raw = len(header).to_bytes(8, "little") + header.encode() + b"\x00" * 64
    (run / rel).write_bytes(raw)
    rehash(run, rel)


def _unreadable(ws, case):
    path = case / "secret.csv"
    path.write_text(_log())
    path.chmod(0)


def _user_dir(ws, case):
    (case / "mine" / "sub").mkdir(parents=True)
    (case / "mine" / "thesis.tex").write_text("years of work")


def _file_out(ws, case):
    (case / "existing.csv").write_text("a,b\n")


def _prev_run(ws, case):
    shutil.copytree(ws / "run", case / "segrec-out")


def _prev_run_with_notes(ws, case):
    shutil.copytree(ws / "run", case / "segrec-out")
    (case / "segrec-out" / "notes.md").write_text("mine")


def _parent_is_file(ws, case):
    (case / "afile").write_text("x")


R = "{ws}/run"
EASE_FOR_U1 = ("recommend", "{case}/run", "--system", "ease", "--user", "u1")
G = "{ws}/good.csv"


def _run(data: str, *flags: str) -> tuple[str, ...]:
    return ("run", "--data", data, *CHEAP, *flags)


CASES: tuple[Case, ...] = (
    # ---------------------------------------------------------------- files
    Case("data-missing", "files", _run("{ws}/nope.csv"), says="file not found"),
    Case("data-directory", "files", _run("{ws}"), says="directory"),
    Case("data-empty", "files", _run("{ws}/empty.csv"), says="empty"),
    Case("data-header-only", "files", _run("{ws}/header.csv"), says="no data rows", console=True),
    Case("data-only-newlines", "files", _run("{ws}/newlines.csv")),
    Case("data-binary", "files", _run("{ws}/garbage.bin"), says="not a text file"),
    Case("data-gzip", "files", _run("{ws}/log.csv.gz"), says="gzip"),
    Case("data-gzip-named-csv", "files", _run("{ws}/gz-named.csv"), says="gunzip"),
    Case("data-bzip2", "files", _run("{ws}/log.csv.bz2"), says="bzip2"),
    Case("data-xz", "files", _run("{ws}/log.csv.xz"), says="xz"),
    Case("data-zip", "files", _run("{ws}/log.zip"), says="zip"),
    Case("data-utf16-bom", "files", _run("{ws}/utf16.csv"), says="--encoding utf-16"),
    Case("data-utf16-encoding-flag", "files", _run("{ws}/utf16.csv", "--encoding", "utf-16"), expect=(0,)),
    Case("data-utf16-no-bom", "files", _run("{ws}/utf16le.csv"), says="UTF-16"),
    Case("data-latin1", "files", _run("{ws}/latin1.csv"), says="--encoding"),
    Case("data-latin1-flag", "files", _run("{ws}/latin1.csv", "--encoding", "latin-1"), expect=(0,)),
    Case("data-nul-in-id", "files", _run("{ws}/nul-id.csv"), says="NUL"),
    Case("data-wrong-field-count", "files", _run("{ws}/wrong-fields.csv"), says="on lines [5]",
         console=True),
    Case("data-missing-column", "files", _run("{ws}/no-item.csv"), says="--item-col"),
    Case("data-other-column-names", "files", _run("{ws}/user-item.csv"), says="--user-col"),
    Case("data-column-flags", "files", _run("{ws}/user-item.csv", "--user-col", "user", "--item-col", "item"),
         expect=(0,)),
    Case("data-column-config", "files", _run("{ws}/user-item.csv", "--config", "{ws}/columns.toml"),
         expect=(0,)),
    Case("data-column-flag-absent", "files", _run(G, "--time-col", "when"), says="when"),
    Case("data-duplicate-header-column", "files", _run("{ws}/dup-header.csv"), says="appears 2 times"),
    Case("data-bad-time-line-6", "files", _run("{ws}/bad-time.csv"), says="on lines [6]"),
    Case("data-negative-rating", "files", _run("{ws}/negative.csv"), says="negative"),
    Case("data-infinite-rating", "files", _run("{ws}/inf.csv"), says="infinite"),
    Case("data-one-row", "files", _run("{ws}/one-row.csv"), says="at least 2"),
    Case("data-one-item", "files", _run("{ws}/one-item.csv"), says="at least 2", console=True),
    Case("data-one-user", "files", _run("{ws}/one-user.csv"), says="at least 2"),
    Case("data-single-interactions", "files", _run("{ws}/singletons.csv"), says="--no-split"),
    Case("data-single-interactions-no-split", "files", _run("{ws}/singletons.csv", "--no-split"),
         expect=(0,)),
    Case("data-parquet-list-ids", "files", _run("{ws}/list-ids.parquet"), says="list<"),
    Case("data-parquet-struct-ids", "files", _run("{ws}/struct-ids.parquet"), says="struct<"),
    Case("data-parquet-named-csv", "files", _run("{ws}/parquet-named.csv"), expect=(0,)),
    Case("data-parquet-truncated", "files", _run("{ws}/truncated.parquet"), says="Parquet"),
    Case("data-unreadable", "files", _run("{case}/secret.csv"), prepare=_unreadable, says="permission",
         extra={"needs_non_root": True}),
    Case("data-fifo", "files", _run("{ws}/fifo.csv")),
    Case("data-crlf-bom", "files", _run("{ws}/crlf-bom.csv"), expect=(0,)),
    Case("data-header-repeated", "files", _run("{ws}/header-again.csv"), says="repeat the header"),
    Case("data-huge-id", "files", _run("{ws}/huge-id.csv"), expect=(0, 2)),
    Case("items-garbage", "files", _run(G, "--items", "{ws}/items-garbage.csv")),
    Case("users-without-id", "files", _run(G, "--users", "{ws}/users-noid.csv"), says="user_id"),
    Case("segment-header-only", "files", ("segment", "--data", "{ws}/header.csv", "--embedder", "none")),
    Case("segment-one-item", "files", ("segment", "--data", "{ws}/one-item.csv", "--embedder", "none"),
         says="at least 2"),
    # ---------------------------------------------------------------- flags
    Case("flag-segments-abc", "flags", ("run", "--data", G, "--segments", "abc"), says="--segments"),
    Case("flag-segments-0", "flags", ("run", "--data", G, "--segments", "0"), says=">= 1"),
    Case("flag-segments-negative", "flags", ("run", "--data", G, "--segments", "-2"), says="--segments"),
    Case("flag-systems-comma", "flags", ("run", "--data", G, "--systems", ","), says="no system"),
    Case("flag-systems-unknown", "flags", ("run", "--data", G, "--systems", "eas"),
         says="did you mean 'ease'"),
    Case("flag-systems-twice", "flags", ("run", "--data", G, "--systems", "ease,ease"), says="twice"),
    Case("flag-systems-segmented-alone", "flags",
         ("run", "--data", G, "--systems", "segmented", "--segments", "2", "--quiet"), expect=(0,)),
    Case("flag-seed-negative", "flags", ("run", "--data", G, "--seed", "-1"), says="--seed"),
    Case("flag-device-tpu", "flags", ("run", "--data", G, "--device", "tpu:99"), says="--device"),
    Case("flag-device-cuda-9", "flags", ("run", "--data", G, "--device", "cuda:9", *CHEAP), says="--device"),
    Case("flag-method-unknown", "flags", ("run", "--data", G, "--method", "magic"), says="--method"),
    Case("flag-workers-0", "flags", ("run", "--data", G, "--workers", "0"), says="--workers"),
    Case("flag-retries-negative", "flags", ("run", "--data", G, "--max-retries", "-1"), says="--max-retries"),
    Case("flag-executor-unknown", "flags", ("run", "--executor", "spark"), says="invalid choice"),
    Case("flag-unknown", "flags", ("run", "--fast"), says="unrecognized"),
    Case("flag-verb-typo", "flags", ("segmnt",), says="invalid choice"),
    Case("flag-no-verb", "flags", (), says="segrec run"),
    Case("flag-progress-every-0", "flags", ("run", "--progress-every", "0"), says="--progress-every"),
    Case("out-user-folder", "flags", _run(G, "--out", "{case}/mine"), prepare=_user_dir,
         says="segrec did not write"),
    Case("out-file", "flags", _run(G, "--out", "{case}/existing.csv"), prepare=_file_out, says="is a file"),
    Case("out-dot", "flags", _run(G, "--out", "."), says="current directory"),
    Case("out-previous-run", "flags", _run(G), prepare=_prev_run, says="--overwrite"),
    Case("out-previous-run-overwrite", "flags", _run(G, "--overwrite"), prepare=_prev_run, expect=(0,)),
    Case("out-previous-run-with-notes", "flags", _run(G, "--overwrite"), prepare=_prev_run_with_notes,
         says="notes.md"),
    Case("out-under-a-file", "flags", _run(G, "--out", "{case}/afile/run"), prepare=_parent_is_file,
         says="is a file"),
    Case("recommend-k-0", "flags", ("recommend", R, "--user", "u1", "--k", "0"), says="--k"),
    Case("recommend-k-huge", "flags", ("recommend", R, "--user", "u1", "--k", "1000000000"), expect=(0,)),
    Case("recommend-no-users", "flags", ("recommend", R), says="--user"),
    Case("recommend-users-missing", "flags", ("recommend", R, "--users", "{ws}/nope.txt"), says="not found"),
    Case("recommend-users-binary", "flags", ("recommend", R, "--users", "{ws}/ids-binary.txt"),
         says="UTF-16"),
    Case("recommend-system-unknown", "flags", ("recommend", R, "--user", "u1", "--system", "nope"),
         says="--list"),
    Case("recommend-not-a-run", "flags", ("recommend", "{ws}", "--list"), says="manifest.json"),
    Case("recommend-out-is-dir", "flags", ("recommend", R, "--user", "u1", "--out", "{ws}"),
         says="is a directory"),
    Case("serve-port-70000", "flags", ("serve", R, "--port", "70000"), says="--port"),
    Case("serve-public-without-key", "flags", ("serve", R, "--host", "0.0.0.0", "--port", "0"),
         says="--insecure", console=True),
    Case("serve-key-env-unset", "flags", ("serve", R, "--api-key-env", "SEGREC_NO_SUCH_VAR"), says="not set"),
    Case("serve-max-k-0", "flags", ("serve", R, "--max-k", "0"), says="--max-k"),
    Case("serve-budget-fraction-2", "flags", ("serve", R, "--budget-fraction", "2"),
         says="--budget-fraction"),
    Case("serve-reload-root-missing", "flags", ("serve", R, "--reload-root", "{ws}/nope"),
         says="--reload-root"),
    Case("synth-users-0", "flags", ("synth", "--users", "0", "--out", "{case}/s"), says="--users"),
    # ---------------------------------------------------------------- TOML
    Case("toml-binary", "toml", ("run", "--config", "{ws}/binary.toml"), says="not UTF-8"),
    Case("toml-syntax", "toml", ("run", "--config", "{ws}/syntax.toml"), says="not valid TOML"),
    Case("toml-n-segments-0", "toml", ("run", "--config", "{ws}/k0.toml"), says="n_segments"),
    Case("toml-ks", "toml", ("run", "--config", "{ws}/ks.toml"), says="evaluate.ks"),
    Case("toml-ratios-zero", "toml", ("run", "--config", "{ws}/ratios.toml"), says="no_split"),
    Case("toml-ratios-sum", "toml", ("run", "--config", "{ws}/ratios-sum.toml"), says="sum to 1"),
    Case("toml-device", "toml", ("run", "--config", "{ws}/device.toml"), says="device"),
    Case("toml-negative-epochs", "toml", ("run", "--data", G, "--config", "{ws}/epochs.toml",
                                          "--systems", "transformer"), says="[models.transformer] epochs"),
    Case("toml-unknown-model-key", "toml", ("run", "--data", G, "--config", "{ws}/unknown-model-key.toml",
                                            "--systems", "transformer"), says="epoch"),
    Case("toml-unknown-key", "toml", ("run", "--config", "{ws}/unknown-top.toml"),
         says="did you mean 'seed'"),
    Case("toml-unknown-section", "toml", ("run", "--config", "{ws}/unknown-section.toml"),
         says="did you mean 'models'"),
    Case("toml-data-missing", "toml", ("run", "--config", "{ws}/missing-data.toml"), says="not found"),
    Case("toml-seed-text", "toml", ("run", "--config", "{ws}/seed.toml"), says="seed"),
    Case("toml-empty-column", "toml", ("run", "--config", "{ws}/empty-col.toml"), says="data.columns.user"),
    Case("toml-encoding", "toml", ("run", "--config", "{ws}/encoding.toml"), says="encoding"),
    Case("toml-n-boot", "toml", ("run", "--config", "{ws}/nboot.toml"), says="n_boot"),
    Case("toml-no-systems", "toml", ("run", "--config", "{ws}/no-systems.toml"), says="at least one system"),
    Case("toml-deeply-nested", "toml", ("run", "--config", "{ws}/deep.toml")),
    Case("toml-directory", "toml", ("run", "--config", "{ws}/conf-dir.toml"), says="directory"),
    Case("toml-missing", "toml", ("run", "--config", "{ws}/nope.toml"), says="not found"),
    # ---------------------------------------------------------------- artifacts
    Case("art-seen-indices-shifted", "artifacts", EASE_FOR_U1,
         prepare=_t(_shift_seen), says="seen_indices", console=True),
    Case("art-wrong-shape", "artifacts", EASE_FOR_U1,
         prepare=_t(_shape)),
    Case("art-float-indices", "artifacts", EASE_FOR_U1,
         prepare=_t(_dtype), says="dtype"),
    Case("art-huge-tensor-header", "artifacts", EASE_FOR_U1,
         prepare=_t(_huge_header), console=True),
    Case("art-symlink-out", "artifacts", ("recommend", "{case}/run", "--list"), prepare=_t(_symlink),
         says="symbolic link"),
    Case("art-passwd-entry", "artifacts", ("recommend", "{case}/run", "--list"), prepare=_t(_passwd),
         says="not a plain relative path"),
    Case("art-no-files", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(lambda ws, run: edit_manifest(run, files=None)), says="no file checksums"),
    Case("art-system-outside", "artifacts", ("recommend", "{case}/run", "--user", "u1"),
         prepare=_t(lambda ws, run: edit_manifest(run, systems=["../../x"], best_system="../../x"))),
    Case("art-no-manifest", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(lambda ws, run: (run / "manifest.json").unlink()), says="manifest.json"),
    Case("art-manifest-garbage", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(lambda ws, run: (run / "manifest.json").write_bytes(b"\xff\x00{")), says="manifest.json"),
    Case("art-manifest-deep", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(lambda ws, run: (run / "manifest.json").write_text("[" * 100_000 + "]" * 100_000))),
    Case("art-manifest-list", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(lambda ws, run: (run / "manifest.json").write_text("[1, 2]"))),
    Case("art-model-class-unknown", "artifacts", EASE_FOR_U1,
         prepare=_t(_rewrite("systems/ease/model.json", b'{"class": "evil", "config": {}}')),
         says="unknown model class"),
    Case("art-model-json-list", "artifacts", EASE_FOR_U1,
         prepare=_t(_rewrite("systems/ease/model.json", b"[]"))),
    Case("art-segments-garbage", "artifacts", ("recommend", "{case}/run", "--user", "u1"),
         prepare=_t(_rewrite("segments.parquet", b"PAR1 not really"))),
    Case("art-results-not-object", "artifacts", ("recommend", "{case}/run", "--list"),
         prepare=_t(_rewrite("results.json", b"42"))),
    Case("art-fifo-inside", "artifacts", ("recommend", "{case}/run", "--list"), prepare=_t(_fifo),
         says="not a regular file"),
)


def run_in_process(case: Case, ws: Path, case_dir: Path, capture) -> tuple[int, str]:
    """Run ``case`` through :func:`segrec.cli.main` in ``case_dir``; returns (rc, stderr)."""
    from segrec.cli import main

    old = Path.cwd()
    os.chdir(case_dir)
    try:
        code = main(case.args(ws, case_dir))
    finally:
        os.chdir(old)
    return code, capture()


def check_outcome(case: Case, code: int, stderr: str, case_dir: Path) -> str:
    """The outcome label; raises AssertionError when the case did not end as it must."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert code in case.expect, f"{case.name}: exit {code}, expected {case.expect}; stderr: {stderr[-800:]}"
    assert "Traceback" not in stderr, f"{case.name}: traceback: {stderr[-800:]}"
    if code == 2:
        errors = [line for line in lines if line.startswith("segrec: error:")]
        assert len(errors) == 1, f"{case.name}: expected one error line, got {lines[-5:]}"
        assert not [line for line in lines if not line.startswith(("segrec: ", "["))], \
            f"{case.name}: stray output {lines}"
        if case.says:
            assert case.says in errors[0], f"{case.name}: {errors[0]!r} does not say {case.says!r}"
    leftovers = [p.name for p in case_dir.rglob(".*.tmp-*")]
    assert not leftovers, f"{case.name}: half-written output left behind: {leftovers}"
    return "exit 0" if code == 0 else "exit 2, one line"


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot run here (root reads any file), or None."""
    if case.extra.get("needs_non_root") and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root: a file without read permission is still readable"
    return None


__all__ = ["CASES", "Case", "build_workspace", "check_outcome", "run_in_process", "skip_reason"]
