"""The self-contained HTML report of a run (issue 7).

``segrec run`` writes ``report.json`` (the payload: every number the page shows)
and ``report.html`` (the page: inline CSS, figures as ``data:`` SVG, no script,
no external URL) into its output directory. The HTTP dashboard serves the same
page at ``/``.

Example:
    >>> from segrec.report import write_report
    >>> write_report(result, "out/report.html")  # doctest: +SKIP
    >>> write_report("segrec-out", "elsewhere.html")  # a saved run directory  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SegrecError
from ..io import atomic_write_text, read_json
from .collect import build_report_data, payload_from_results
from .page import NAV_MARKER, render_report

__all__ = [
    "NAV_MARKER",
    "REPORT_DATA",
    "REPORT_HTML",
    "build_report_data",
    "load_report_data",
    "render_report",
    "write_report",
]

#: file names inside a run directory
REPORT_HTML = "report.html"
REPORT_DATA = "report.json"


def load_report_data(run_dir: str | Path) -> dict[str, Any]:
    """The report payload of a saved run: ``report.json``, else rebuilt (reduced) from ``results.json``.

    Raises:
        SegrecError: ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    if (run_dir / REPORT_DATA).is_file():
        return read_json(run_dir / REPORT_DATA)
    if not (run_dir / "results.json").is_file():
        raise SegrecError(
            f"{run_dir}: no {REPORT_DATA} or results.json; pass the --out directory of `segrec run`"
        )
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else None
    return payload_from_results(read_json(run_dir / "results.json"), manifest)


def write_report(source: Any, path: str | Path, **options: Any) -> Path:
    """Write the self-contained HTML report of a run.

    Args:
        source: A :class:`~segrec.experiment.RunResult`, a payload dict, or a run
            directory written by :func:`segrec.artifacts.save_run`.
        path: The HTML file to write (atomically: a reader never sees half a page).
        **options: Passed to :func:`build_report_data` for a RunResult (``n_boot``,
            ``costs``, ``max_map_users``).

    Returns:
        ``path``.

    Raises:
        SegrecError: ``source`` is a directory that holds no run.
    """
    if isinstance(source, str | Path):
        payload = load_report_data(source)
    elif isinstance(source, dict):
        payload = source
    else:
        payload = build_report_data(source, **options)
    path = Path(path)
    atomic_write_text(path, render_report(payload))
    return path
