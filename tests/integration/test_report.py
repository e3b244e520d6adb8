"""The self-contained HTML report (issue 7): written by `segrec run`, offline by construction.

What a browser does with the page is tested in tests/browser; here: the files, the
numbers behind the page, that nothing external is referenced, and the rebuild paths.
"""

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from segrec.artifacts import load_run
from segrec.cli import main
from segrec.errors import MissingDependencyError, SegrecError
from segrec.report import build_report_data, load_report_data, render_report, write_report
from segrec.report.collect import BOOTSTRAP_MAX_USERS, mean_ci

K = 3
CHEAP = "popularity,ease,local_ease,segmented"
DATA_URI = re.compile(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`segrec run` on small built-in synthetic data (text features off: no MiniLM load)."""
    root = tmp_path_factory.mktemp("report")
    config = root / "tiny.toml"
    config.write_text("[data]\nsynthetic_users = 300\nsynthetic_items = 150\nsynthetic_segments = 3\n"
                      "[segmentation]\ntext = false\n[evaluate]\nn_boot = 200\n")
    out = root / "run"
    assert main(["run", "--config", str(config), "--systems", CHEAP, "--segments", str(K), "--out", str(out),
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def html(run_dir):
    return (run_dir / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def payload(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def test_run_writes_the_report_into_the_checksummed_artifact(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"report.html", "report.json"} <= set(manifest["files"])
    load_run(run_dir)  # checksums verified, report files included


def test_page_references_nothing_external(html):
    # no scripts, no remote URLs of any kind: every figure is an inline data: SVG
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]
    assert "url(" not in html


def test_every_figure_is_a_valid_standalone_svg(html):
    figures = re.findall(r'data-plot="(\w+)"', html)
    assert set(figures) >= {"map", "ndcg", "frontier", "routing"}
    for blob in DATA_URI.findall(html):
        svg = base64.b64decode(blob).decode("utf-8")
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        # URLs only as XML namespace names (identifiers, never fetched)
        assert "http" not in re.sub(r'xmlns(:\w+)?="[^"]*"', "", svg)


def test_sections_and_tables(html, payload):
    for section in ("summary", "segments-section", "accuracy", "terciles", "frontier", "routing", "curves"):
        assert f'id="{section}"' in html
    segments_table = html.split('id="segments"')[1].split("</table>")[0]
    assert segments_table.count("<tr>") == K + 1  # header + one row per segment
    assert len(payload["segments"]) == K
    assert sum(s["size"] for s in payload["segments"]) == payload["dataset"]["users"]
    for s in payload["segments"]:
        assert s["top_items"] and s["description"] and s["tier"] in ("global", "local", "popularity")


def test_segment_cis_bracket_the_means_that_evaluation_reported(run_dir, payload):
    results = json.loads((run_dir / "results.json").read_text())
    rows = payload["ndcg_by_segment"]["rows"]
    assert {r["system"] for r in rows} == set(CHEAP.split(","))
    assert len(rows) == 4 * (K + 1)
    for r in rows:
        assert r["lo"] <= r["mean"] <= r["hi"]
        rep = results["systems"][r["system"]]
        want = (rep["overall"] if r["group"] == "all" else rep["segments"][str(r["group"])])["ndcg@10"]
        assert r["mean"] == pytest.approx(want)


def test_map_terciles_costs_and_routing(payload):
    m = payload["map"]
    assert m["shown"] == m["n_users"] == 300 and len(m["x"]) == len(m["y"]) == len(m["segment"]) == 300
    assert set(m["segment"]) == set(range(K))
    assert {r["system"] for r in payload["terciles"]["rows"]} == set(CHEAP.split(","))
    assert set(payload["terciles"]["users"]) == {"light", "medium", "heavy"}
    costs = {r["system"]: r for r in payload["costs"]}
    assert costs["popularity"]["flops_per_request"] < costs["ease"]["flops_per_request"]
    routing = payload["routing"]
    assert routing["policy"] == "accuracy" and set(routing["routing"]) == {str(s) for s in range(K)}
    assert {o["name"] for o in routing["options"]} >= {"all global", "all local", "accuracy (chosen)"}
    chosen = next(o for o in routing["options"] if o["name"] == "accuracy (chosen)")
    # the accuracy policy is at least as good on validation as any single tier everywhere
    assert chosen["ndcg@10"] >= max(o["ndcg@10"] for o in routing["options"]) - 1e-12


def test_rebuilding_from_the_run_directory_gives_the_same_page(run_dir, html, tmp_path):
    again = write_report(run_dir, tmp_path / "again.html")
    assert again.read_text(encoding="utf-8") == html  # deterministic figures: byte-identical


def test_runs_without_report_json_get_a_reduced_page(run_dir, tmp_path):
    old = shutil.copytree(run_dir, tmp_path / "old")
    (old / "report.json").unlink()
    (old / "report.html").unlink()
    page = write_report(old, tmp_path / "reduced.html").read_text(encoding="utf-8")
    assert "Reduced report" in page and 'id="segments"' in page and 'data-plot="ndcg"' in page
    with pytest.raises(SegrecError, match="no report.json or results.json"):
        load_report_data(tmp_path)


def test_curves_escaping_and_missing_matplotlib(payload, monkeypatch):
    p = json.loads(json.dumps(payload))
    p["curves"] = {"transformer": [{"epoch": 0, "loss": None, "ndcg@10": 0.05},
                                   {"epoch": 1, "loss": 5.0, "ndcg@10": 0.12},
                                   {"epoch": 2, "loss": 4.8, "ndcg@10": 0.15}]}
    p["segments"][0]["top_items"][0][1] = "<script>alert('x')</script>"
    page = render_report(p)
    assert 'data-plot="curves"' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page

    import segrec.report.plots as plots

    def absent(module, extra):
        raise MissingDependencyError(f"{module} is not installed; pip install 'segrec[{extra}]'")

    monkeypatch.setattr(plots, "require", absent)
    page = render_report(p)
    assert 'data-plot="' not in page and "segrec[report]" in page and 'id="segments"' in page


def test_incompatible_payload_is_refused(payload):
    with pytest.raises(SegrecError, match="payload version"):
        render_report({**payload, "version": 99})


def test_mean_ci():
    rng = np.random.default_rng(0)
    assert mean_ci(np.full(50, 0.25), n_boot=200, rng=rng) == (0.25, 0.25, 0.25)
    assert all(np.isnan(mean_ci(np.array([]), n_boot=200, rng=rng)))
    v = rng.random(400)
    mean, lo, hi = mean_ci(v, n_boot=2000, rng=rng)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v))
    assert mean == pytest.approx(v.mean()) and lo == pytest.approx(mean - half, abs=0.01)
    assert hi == pytest.approx(mean + half, abs=0.01)
    big = rng.random(BOOTSTRAP_MAX_USERS + 1)  # normal approximation branch: exact formula
    m, lo, hi = mean_ci(big, n_boot=2000, rng=rng)
    assert hi - m == pytest.approx(1.96 * big.std(ddof=1) / np.sqrt(len(big)))


def test_build_report_data_without_evaluation_is_json_safe():
    # a run with nothing held out: no reports, no routing; the page still renders and says so
    import warnings

    from segrec.config import load_config
    from segrec.experiment import run_experiment

    cfg = load_config(None, data={"synthetic_users": 60, "synthetic_items": 40, "synthetic_segments": 2},
                      split={"no_split": True}, segmentation={"text": False, "n_segments": 2},
                      models={"systems": ("popularity",)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg)
    payload = build_report_data(result)
    json.dumps(payload, allow_nan=False)
    page = render_report(payload)
    assert "Nothing was evaluated" in page and 'data-plot="map"' in page


# ------------------------------------------------------------------ the dashboard's routes (no browser)
@pytest.fixture(scope="module")
def client(run_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from segrec.serve import create_app

    with TestClient(create_app(run_dir)) as c:
        yield c


def test_dashboard_serves_the_report_with_navigation(client, html):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<nav class="app">' in r.text and "<!--segrec:nav-->" not in r.text
    assert r.text.replace(r.text[r.text.index('<nav class="app">'):r.text.index("</nav>") + 6], "") == \
        html.replace("<!--segrec:nav-->", "")  # the very page `segrec run` wrote
    lookup = client.get("/lookup")
    assert lookup.status_code == 200 and 'src="/ui/static/lookup.js"' in lookup.text
    assert "http://" not in lookup.text and "https://" not in lookup.text


@pytest.mark.parametrize("name,status", [("lookup.js", 200), ("lookup.css", 200), ("report.css", 200),
                                         ("lookup.html", 404), ("..%2Fhttp.py", 404), ("nothing.js", 404)])
def test_static_files_are_a_fixed_list(client, name, status):
    r = client.get(f"/ui/static/{name}")
    assert r.status_code == status
    if status == 200:
        assert "http://" not in r.text and "https://" not in r.text  # bundled: nothing from a CDN


def test_item_search_and_resolution(client, run_dir):
    items = load_run(run_dir).items()
    pick = items.iloc[5]
    word = pick.title.split()[-1][1:].lower()  # part of a title, lower case
    found = client.get("/ui/api/items", params={"q": word, "limit": 100}).json()["items"]
    assert found and all(word in i["title"].lower() or i["item_id"].lower().startswith(word) for i in found)
    assert pick.item_id in [i["item_id"] for i in found]
    queries = [pick.item_id, pick.title.upper(), word, "zzz-none", " "]
    r = client.post("/ui/api/resolve", json={"queries": queries})
    out = r.json()
    assert [i["match"] for i in out["items"]] == ["id", "title", "partial"]
    assert out["items"][0]["item_id"] == out["items"][1]["item_id"] == pick.item_id
    assert out["unresolved"] == ["zzz-none"]
    assert client.post("/ui/api/resolve", json={"queries": "nope"}).status_code == 422


def test_examples_cover_every_segment(client, run_dir):
    ex = client.get("/ui/api/examples", params={"per_segment": 2}).json()
    assert sorted({u["segment"] for u in ex["users"]}) == list(range(K))
    assert len(ex["users"]) == 2 * K and ex["has_titles"] and len(ex["items"]) == 10
    # the server's default is the run's best system on inner validation (issue 14)
    served = load_run(run_dir).manifest["best_system"]
    assert ex["system"] == served and ex["policy"] == ("accuracy" if served == "segmented" else None)


def test_dashboard_without_a_saved_report(run_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from segrec.serve import create_app

    router = load_run(run_dir).router()
    router.info.pop("path")  # an in-memory router: no run directory to read a report from
    with TestClient(create_app(router)) as c:
        page = c.get("/").text
    assert "No report for this artifact" in page and page.count("<tr>") == K + 1


def test_adapter_validation_table_renders_when_adapters_ran(payload, run_dir):
    # this run fitted no adapters: no table, and results.json says so with an empty list
    assert payload["adaptation"] == [] and 'id="adaptation"' not in render_report(payload)
    assert json.loads((run_dir / "results.json").read_text())["adaptation"] == []
    rows = [{"segment": 0, "users": 120, "valid_ndcg_global": 0.2684, "valid_ndcg_adapted": 0.2773,
             "best_epoch": 6, "adapted": True},
            {"segment": 1, "users": 30, "valid_ndcg_global": 0.2490, "valid_ndcg_adapted": None,
             "best_epoch": 0, "adapted": False}]
    page = render_report({**payload, "adaptation": rows})
    table = page[page.index('id="adaptation"'):]
    table = table[:table.index("</table>")]
    assert "0.2773" in table and "0.2684" in table and "θ_shared kept" in table
    assert table.count("<tr") == 3  # header + one row per segment
