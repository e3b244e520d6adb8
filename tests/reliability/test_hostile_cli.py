"""Hostile files, flags, TOML and artifacts on the command line (issue 16): one clear line or success.

Every case of :data:`hostile_cases.CASES` runs in-process through :func:`segrec.cli.main`
(fast); the ones marked ``console`` (process-level failures: a native abort at exit, a
segfault, a server that would start) also run through the installed ``segrec`` command.
``benchmarks/hostile_suite.py`` runs every case through the console script.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hostile_cases import CASES, build_workspace, check_outcome, run_in_process, skip_reason
from tamper import segrec_cli

OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_workspace(tmp_path_factory.mktemp("hostile"))


def _prepare(case, workspace, tmp_path):
    if (why := skip_reason(case)) is not None:
        pytest.skip(why)
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    if case.prepare is not None:
        case.prepare(workspace, case_dir)
    return case_dir


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_in_process(case, workspace, tmp_path, capsys):
    case_dir = _prepare(case, workspace, tmp_path)
    code, err = run_in_process(case, workspace, case_dir, lambda: capsys.readouterr().err)
    OUTCOMES[f"{case.kind}: {check_outcome(case, code, err, case_dir)}"] += 1


CONSOLE = [c for c in CASES if c.console]


@pytest.mark.parametrize("case", CONSOLE, ids=[c.name for c in CONSOLE])
def test_case_through_the_console_script(case, workspace, tmp_path):
    case_dir = _prepare(case, workspace, tmp_path)
    done = segrec_cli(*case.args(workspace, case_dir), cwd=case_dir, timeout=120)
    assert done.returncode >= 0, f"{case.name}: killed by signal {-done.returncode}: {done.stderr[-500:]}"
    OUTCOMES[f"console {case.kind}: {check_outcome(case, done.returncode, done.stderr, case_dir)}"] += 1


def test_the_table_is_big_enough():
    kinds = Counter(c.kind for c in CASES)
    assert len(CASES) >= 100 and all(kinds[k] >= 15 for k in ("files", "flags", "toml", "artifacts")), kinds


def teardown_module(module):
    print(f"\nhostile CLI cases: {len(CASES)} ({dict(Counter(c.kind for c in CASES))}); "
          f"outcomes: {dict(sorted(OUTCOMES.items()))}")
