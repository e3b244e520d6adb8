"""Browser fixtures (issue 7): a tiny run, a live server on loopback, Debian's Chromium via Playwright.

`playwright install` downloads browsers and cannot work offline, so the tests launch
the system Chromium (`apt-get install chromium`; `.ci/run` does it). The tests skip,
with the reason, only when Playwright or Chromium is absent; with
SEGREC_REQUIRE_BROWSER=1 (set by `.ci/run`) their absence is an error instead.
"""

import contextlib
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"
#: the launch flags of the brief: no GPU, no sandbox (containers), and nothing that phones home
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHEAP = ("popularity", "ease", "local_ease", "segmented")


def _chromium() -> str | None:
    for candidate in (os.environ.get("SEGREC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _unavailable(reason: str):
    if os.environ.get("SEGREC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (SEGREC_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install 'segrec[dev]')")
    path = _chromium()
    if path is None:
        _unavailable("no Chromium at /usr/bin/chromium (apt-get install chromium) or $SEGREC_CHROMIUM")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A saved run of the cheap systems on tiny synthetic data (text features off: no MiniLM load)."""
    from segrec.artifacts import save_run
    from segrec.config import load_config
    from segrec.experiment import run_experiment

    cfg = load_config(None, data={"synthetic_users": 300, "synthetic_items": 150, "synthetic_segments": 3},
                      segmentation={"text": False, "n_segments": 3}, models={"systems": CHEAP},
                      evaluate={"n_boot": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg)
    return save_run(result, tmp_path_factory.mktemp("browser") / "run")


@pytest.fixture(scope="session")
def live_server(run_dir):
    """`segrec serve`'s app under uvicorn on 127.0.0.1, a port the OS picks; stopped at the end."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from segrec.serve import create_app

    app = create_app(run_dir)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class PageLog:
    """What a page did: console messages, uncaught errors, requests and failed requests."""

    def __init__(self, page):
        self.console, self.errors, self.requests, self.failed = [], [], [], []
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        page.on("response", lambda r: r.status >= 400 and self.failed.append((r.url, r.status)))

    def problems(self) -> list:
        """Console errors and warnings, page errors and failed requests (should be empty)."""
        return ([m for m in self.console if m[0] in ("error", "warning")] + self.errors + self.failed)


@pytest.fixture
def open_page(browser):
    """`with open_page(**context_options) as (page, log):` a fresh browser context and its PageLog."""

    @contextlib.contextmanager
    def opener(**context_options):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
        page = context.new_page()
        try:
            yield page, PageLog(page)
        finally:
            context.close()

    return opener


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
