"""The README, as a new user types it: the installed ``segrec`` command, run as a subprocess (issue 15).

Every command the README shows runs here on small data (a tiny model config where the
README's line would train for minutes), every flag it shows exists, the commands that
``segrec run`` prints at its end work on that run's own ids, the README's serve examples
work on the demo's ids, and each mistake a newcomer makes exits 2 with one line saying
what to do. In-process tests (``segrec.cli.main``) could not see a verb the console
script does not register; these can.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
SEGREC = Path(sys.executable).with_name("segrec")
#: settings that keep the README's commands to seconds on small data (same systems, shorter fits)
TINY = """
[segmentation]
text = false
[models.transformer]
epochs = 2
max_len = 20
[models.adapter]
epochs = 1
[evaluate]
n_boot = 200
"""
CHEAP = "popularity,ease,local_ease,segmented"


def segrec(*args: str, cwd: Path, timeout: float = 300,
           env: dict | None = None) -> subprocess.CompletedProcess:
    if not SEGREC.is_file():
        pytest.skip(f"no console script at {SEGREC} (pip install -e .)")
    return subprocess.run([str(SEGREC), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
    return done


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-1000:]}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("segrec: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, lines
    return errors[0]


def readme_commands() -> list[str]:
    """Every ``segrec ...`` line of the README's bash blocks (continuations joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            line = re.sub(r"^(\.venv/bin/)?", "", line)
            if line.startswith("segrec "):
                out.append(line)
            elif "&& .venv/bin/segrec" in line:
                out.append(line.split("&& .venv/bin/")[-1])
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A user's working folder with the README's input files (from `segrec synth`) and a tiny config."""
    d = tmp_path_factory.mktemp("newcomer")
    ok(segrec("synth", "--users", "300", "--items", "150", "--segments", "3", "--seed", "1", "--out", "data",
              cwd=d))
    for name in ("interactions.csv", "items.csv", "users.csv"):
        (d / name).write_bytes((d / "data" / name).read_bytes())
    (d / "fit.csv").write_bytes((d / "interactions.csv").read_bytes())
    (d / "tiny.toml").write_text(TINY)
    return d


def test_every_verb_and_flag_the_readme_shows_exists(home):
    commands = readme_commands()
    assert len(commands) >= 10, commands
    by_verb: dict[str, set[str]] = {}
    for line in commands:
        words = shlex.split(line.replace("[", " ").replace("]", " "))
        by_verb.setdefault(words[1], set()).update(w for w in words[2:] if w.startswith("--"))
    assert set(by_verb) == {"run", "recommend", "synth", "segment", "serve", "update"}, by_verb
    for verb, flags in by_verb.items():
        help_text = ok(segrec(verb, "--help", cwd=home)).stdout
        missing = sorted(f for f in flags if f not in help_text)
        assert not missing, f"`segrec {verb}` does not know {missing} (README shows them)"
        assert "%%" not in help_text


def test_readme_run_commands_on_small_data(home):
    """`segrec run --data ... --items ... --users ... --out runs/mine` and the others of the README."""
    run = ok(segrec("run", "--data", "interactions.csv", "--items", "items.csv", "--users", "users.csv",
                    "--out", "runs/mine", "--systems", CHEAP, "--config", "tiny.toml", cwd=home))
    assert "== result ==" in run.stdout and "served system: segmented" in run.stdout
    assert re.search(r"gain over the best baseline \(\w+, NDCG@10 [\d.]+\): [+-][\d.]+ \[95% CI", run.stdout)
    # off a terminal: status lines while the Transformer trains (here every 0.05 s, the default is 30 s)
    three = ok(segrec("run", "--data", "interactions.csv", "--systems", "ease,transformer,segmented",
                      "--out", "runs/three", "--config", "tiny.toml", "--progress-every", "0.05", cwd=home))
    status = [line for line in three.stderr.splitlines() if "still fitting" in line and "transformer" in line]
    assert status and any("epoch" in line for line in status), three.stderr[-1500:]
    fit = ok(segrec("run", "--data", "fit.csv", "--no-split", "--out", "runs/fit",
                    "--systems", "popularity,ease", "--segments", "2", cwd=home))
    assert "nothing was evaluated" in fit.stdout
    listed = ok(segrec("recommend", "runs/mine", "--list", cwd=home)).stdout
    assert "(best)" in listed and "segmented" in listed
    users = [line.split(",")[0] for line in (home / "interactions.csv").read_text().splitlines()[1:6]]
    (home / "ids.txt").write_text("\n".join(users) + "\n")
    ok(segrec("recommend", "runs/mine", "--users", "ids.txt", "--k", "20", "--out", "recs.csv",
              "--system", "ease", cwd=home))
    recs = (home / "recs.csv").read_text().splitlines()
    assert recs[0] == "user_id,item_id,rank,score" and len(recs) == 1 + 20 * len(users)
    # what the run printed at its end works as printed
    printed = next(line.strip() for line in run.stdout.splitlines()
                   if line.strip().startswith("segrec recommend"))
    out = ok(segrec(*shlex.split(printed)[1:], cwd=home)).stdout.splitlines()
    assert out[0] == "user_id,item_id,rank,score" and len(out) == 11
    # segrec update: a known user's new interaction, appended without a refit (the README's line)
    first = (home / "interactions.csv").read_text().splitlines()[1].split(",")
    events = f"user_id,item_id,timestamp\n{first[0]},{first[1]},2000000000\n"
    (home / "new-interactions.csv").write_text(events)
    updated = ok(segrec("update", "runs/mine", "--events", "new-interactions.csv", cwd=home))
    assert "1 interactions of 1 users appended" in updated.stderr
    ok(segrec("recommend", "runs/mine", "--user", first[0], "--k", "5", cwd=home))


def test_opt_in_joint_system_builds_on_the_runs_global_transformer(home):
    """`--systems transformer,joint_transformer,segmented`: one more tier, started from the global model."""
    (home / "joint.toml").write_text(TINY + "[models.joint]\nepochs = 2\nmax_len = 20\n")
    done = ok(segrec("run", "--data", "interactions.csv", "--systems",
                     "transformer,joint_transformer,segmented", "--out", "runs/joint",
                     "--config", "joint.toml", cwd=home))
    assert "joint: starting from the fitted global Transformer" in done.stdout + done.stderr
    results = json.loads((home / "runs/joint/results.json").read_text())
    stages = [s["stage"] for s in results["stages"]]
    assert stages.index("fit global (transformer)") < stages.index("fit joint (joint_transformer)")
    assert "joint_transformer" in results["systems"] and "joint_transformer" in done.stdout
    listed = ok(segrec("recommend", "runs/joint", "--list", cwd=home)).stdout
    assert "joint_transformer" in listed


def test_readme_column_mapping(home):
    log = (home / "interactions.csv").read_text().replace("user_id,item_id,rating,timestamp",
                                                          "uid,sku,rating,ts")
    (home / "log.csv").write_text(log)
    ok(segrec("run", "--data", "log.csv", "--user-col", "uid", "--item-col", "sku", "--time-col", "ts",
              "--out", "runs/log", "--systems", "popularity", "--segments", "2", "--quiet", cwd=home))


def test_readme_segment_command(home):
    done = ok(segrec("segment", "--data", "interactions.csv", "--items", "items.csv", "--users", "users.csv",
                     "--method", "kmeans", "--k", "auto", "--out", "segments.csv", cwd=home))
    assert "segments" in done.stdout and (home / "segments.csv").read_text().startswith("user_id,segment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(run: str, cwd: Path):
    """`segrec serve RUN --port P` as a user starts it; yields the base URL; stopped at the end."""
    port = _free_port()
    proc = subprocess.Popen([str(SEGREC), "serve", run, "--port", str(port)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    httpx = pytest.importorskip("httpx")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "segrec serve did not come up"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _curl_bodies(text: str) -> list[dict]:
    return [json.loads(shlex.split(line)[shlex.split(line).index("-d") + 1])
            for line in text.splitlines() if line.strip().startswith("curl ")]


def _check_routing_verdict(run: Path, printed: str) -> None:
    """Issue 14 item 4: per segment what serves it, its valid NDCG vs the best single system's, the cost,
    and one verdict line, in the run's closing lines and in its report."""
    results = json.loads((run / "results.json").read_text())
    served, rows = results["best_system"], results["selection"]["segments"]
    closing = printed.split("== result ==", 1)[1].splitlines()
    assert closing[1].startswith(f"served system: {served} ")
    start = closing.index(next(line for line in closing if line.startswith("== routing on inner validation")))
    pattern = re.compile(r"segment (\d+) \((\d+) valid users\): (\S+)( \(α=[\d.]+\))?  valid ([\d.]+) "
                         r"vs (\S+) ([\d.]+), honest gain [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\], "
                         r"[\d.e+-]+ MFLOPs/request \(\S+ [\d.e+-]+ MFLOPs\)$")
    per_segment = [pattern.match(line) for line in closing[start + 1:start + 1 + len(rows)]]
    assert all(per_segment), closing[start:start + 1 + len(rows)]
    for match, row in zip(per_segment, rows, strict=True):
        assert int(match[1]) == row["segment"] and int(match[2]) == row["users"]
        assert float(match[5]) == pytest.approx(row["valid_ndcg"], abs=6e-5)
        assert float(match[7]) == pytest.approx(row["valid_ndcg_best_single"], abs=6e-5)
    verdicts = [line for line in closing if line.startswith("served: ")]
    assert len(verdicts) == 1 and verdicts[0].startswith(f"served: {served}")
    assert re.search(r"[+-][\d.]+ NDCG@10 \[[+-][\d.]+, [+-][\d.]+\]", verdicts[0]), verdicts[0]
    assert "MFLOPs/request" in verdicts[0] or "% of the Transformer's FLOPs" in verdicts[0], verdicts[0]
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="served-table"' in page and html.escape(verdicts[0], quote=True) in page


def test_the_demo_run_and_the_readme_serve_examples(home):
    """Bare `segrec run` (the demo data; tiny model settings), then the README's curl lines on its ids."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    demo = home / "demo"
    demo.mkdir()
    (demo / "tiny.toml").write_text(TINY)
    done = ok(segrec("run", "--config", "tiny.toml", "--systems", CHEAP, cwd=demo))
    assert (demo / "segrec-out" / "report.html").is_file()
    _check_routing_verdict(demo / "segrec-out", done.stdout)
    again = segrec("run", "--config", "tiny.toml", "--systems", CHEAP, cwd=demo)
    assert "--overwrite" in one_error_line(again)
    readme_serve = README.split("### Serving", 1)[1].split("```", 2)[1]
    assert "segrec serve segrec-out" in readme_serve
    with serving("segrec-out", demo) as url:
        for body in _curl_bodies(readme_serve) + _curl_bodies(done.stdout):
            r = httpx.post(url + "/v1/recommend", json=body, timeout=30)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["fallback"] is False and len(answer["items"]) == body["k"], (body, answer)
        docs = httpx.get(url + "/docs", timeout=10).text
        assert "http://" not in docs and "https://" not in docs and "/openapi.json" in docs  # nothing remote
        # no API key: no reload route
        assert httpx.post(url + "/v1/admin/reload", json={}, timeout=10).status_code == 404


@pytest.mark.parametrize("argv, says", [
    (["segmnt"], "invalid choice: 'segmnt'"),
    (["run", "--data", "nope.csv"], "--data nope.csv: file not found"),
    (["run", "--data", "user-item.csv", "--systems", "popularity"], "--user-col"),
    (["run", "--data", "bad-time.csv", "--systems", "popularity"], "on lines [6]"),
    (["run", "--segments", "abc"], "--segments"),
    (["run", "--systems", ","], "--systems"),
    (["run", "--systems", "transfomer"], "did you mean 'transformer'"),
    (["recommend", "runs-none"], "not a directory"),
    (["serve", "runs-none", "--host", "0.0.0.0"], "--host 0.0.0.0"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_each_mistake_is_one_line_saying_what_to_do(home, argv, says):
    text = (home / "interactions.csv").read_text()
    (home / "user-item.csv").write_text(text.replace("user_id,item_id,", "user,item,", 1))
    lines = text.splitlines()
    (home / "bad-time.csv").write_text("\n".join([*lines[:5], lines[5].rsplit(",", 1)[0] + ",yesterday",
                                                 *lines[6:]]) + "\n")
    assert says in one_error_line(segrec(*argv, cwd=home))



def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) with its bytes: what "nothing was written" compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def update_home(home) -> Path:
    """A small saved run of its own (so these cases do not depend on the README test's order)."""
    ok(segrec("run", "--data", "fit.csv", "--no-split", "--out", "updates/run",
              "--systems", "popularity,ease", "--segments", "2", "--quiet", cwd=home))
    lines = (home / "fit.csv").read_text().splitlines()
    user, item = lines[1].split(",")[:2]
    seen = {line.split(",")[1] for line in lines[1:] if line.split(",")[0] == user}
    other_item = next(line.split(",")[1] for line in lines[2:] if line.split(",")[1] not in seen)
    (home / "updates" / "unknown-user.csv").write_text(
        f"user_id,item_id,timestamp\n{user},{item},2000000000\nnobody,{item},2000000001\n")
    (home / "updates" / "unknown-item.csv").write_text(
        f"user_id,item_id,timestamp\n{user},{other_item},2000000000\n{user},no-such-item,2000000001\n")
    (home / "updates" / "bad-time.csv").write_text(
        f"user_id,item_id,timestamp\n{user},{item},2000000000\n{user},{other_item},yesterday\n")
    (home / "updates" / "empty.csv").write_text("user_id,item_id,timestamp\n")
    (home / "updates" / "user-files").mkdir()
    (home / "updates" / "user-files" / "notes.txt").write_text("mine\n")
    (home / "updates" / "good.csv").write_text(f"user_id,item_id,timestamp\n{user},{other_item},2000000000\n")
    return home / "updates"


@pytest.mark.parametrize("argv, says", [
    (["run", "--events", "unknown-user.csv"], "column user_id (line 3): 'nobody' is not a known user"),
    (["run", "--events", "unknown-item.csv"], "'no-such-item' is not a known item"),
    (["run", "--events", "bad-time.csv"], "timestamp"),
    (["run", "--events", "missing.csv"], "missing.csv: file not found"),
    (["run", "--events", "empty.csv"], "has no data rows"),
    (["run", "--events", "unknown-user.csv", "--out", "new-run"], "'nobody' is not a known user"),
    (["run", "--events", "good.csv", "--out", "user-files"], "--out user-files already holds files"),
    (["not-a-run", "--events", "good.csv"], "not-a-run: not a directory"),
], ids=["unknown-user", "unknown-item", "bad-time", "missing-events", "empty-events", "bad-events-with-out",
        "out-is-user-files", "not-a-run"])
def test_update_bad_input_is_one_line_and_leaves_nothing_written(update_home, argv, says):
    """`segrec update` on bad input: exit 2, one `segrec: error:` line, the run and its folder untouched."""
    before = _tree(update_home)
    line = one_error_line(segrec("update", *argv, cwd=update_home))
    assert says in line, line
    assert _tree(update_home) == before  # no temp dir, no half-written run or --out, no touched manifest
    assert not (update_home / "new-run").exists()


def test_update_through_the_console_script_then_recommend(update_home):
    """The good path as a user types it: the run's manifest records the update, recommend still works."""
    ok(segrec("update", "run", "--events", "good.csv", "--out", "updated", cwd=update_home))
    manifest = json.loads((update_home / "updated" / "manifest.json").read_text())
    assert manifest["updates"][-1]["events"] == 1 and manifest["updates"][-1]["users"] == 1
    user, item = (update_home / "good.csv").read_text().splitlines()[1].split(",")[:2]
    recs = ok(segrec("recommend", "updated", "--user", user, "--k", "150", "--system", "ease",
                     cwd=update_home)).stdout.splitlines()
    assert recs[0] == "user_id,item_id,rank,score" and item not in {r.split(",")[1] for r in recs[1:]}
    sorted_names = sorted(p.name for p in update_home.iterdir())
    assert not [n for n in sorted_names if ".tmp-" in n or ".old-" in n], sorted_names
