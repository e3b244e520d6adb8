"""Everything the report shows, gathered from a finished run into one JSON-able dict.

The report is rendered from this *payload*, never from live objects, so the same
page can be rebuilt later from a run directory (``report.json``) without the
data or the models, and the HTTP dashboard needs neither matplotlib's inputs nor
a refit. Heavy inputs (per-user rows, the interaction matrix) are reduced here:
per-segment means with bootstrap CIs, and a sample of at most
``max_map_users`` points for the user map.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from ._stats import BOOTSTRAP_MAX_USERS, clean, mean_ci, user_map

__all__ = ["BOOTSTRAP_MAX_USERS", "build_report_data", "mean_ci", "payload_from_results", "user_map"]

log = logging.getLogger(__name__)

#: bump when the payload layout changes incompatibly (the renderer checks it)
PAYLOAD_VERSION = 1
METRIC = "ndcg@10"


def _time_range(ts: np.ndarray | None) -> list[str] | None:
    if ts is None or len(ts) == 0:
        return None
    ts = np.asarray(ts)
    lo, hi = ts.min(), ts.max()
    if np.issubdtype(ts.dtype, np.datetime64):
        return [str(pd.Timestamp(lo).date()), str(pd.Timestamp(hi).date())]
    if np.issubdtype(ts.dtype, np.number) and 1e8 <= lo and hi <= 5e9:  # epoch seconds
        return [str(_dt.datetime.fromtimestamp(float(v), _dt.UTC).date()) for v in (lo, hi)]
    return [str(lo), str(hi)]


def _dataset(result: Any) -> dict[str, Any]:
    data = result.data
    per_user = data.user_counts()
    per_item = np.bincount(data.items, minlength=data.n_items)
    out = {
        "source": str(data.source),
        "users": int(data.n_users),
        "items": int(data.n_items),
        "interactions": int(len(data)),
        "fingerprint": data.fingerprint(),
        "density": len(data) / max(data.n_users * data.n_items, 1),
        "median_per_user": float(np.median(per_user)) if len(per_user) else 0.0,
        "median_per_item": float(np.median(per_item)) if len(per_item) else 0.0,
        "time_range": _time_range(data.timestamps),
        "item_columns": [] if data.item_table is None else [str(c) for c in data.item_table.columns],
        "user_columns": [] if data.user_table is None else [str(c) for c in data.user_table.columns],
    }
    if result.split is not None:
        out["split"] = {part: int(len(getattr(result.split, part))) for part in ("train", "valid", "test")}
    return out


def _segments(result: Any, fit: Any, routing: dict[int, str]) -> list[dict[str, Any]]:
    labels = np.asarray(result.segments, dtype=np.int64)
    sizes = {int(s): int(n) for s, n in zip(*np.unique(labels[labels >= 0], return_counts=True), strict=True)}
    rows = {
        s: {
            "segment": s,
            "name": f"segment {s}",
            "size": n,
            "share": n / max(len(labels), 1),
            "tier": routing.get(s),
        }
        for s, n in sizes.items()
    }
    if sizes and (labels >= 0).all():
        try:
            from ..segment import profile_segments

            for p in profile_segments(labels, fit, names=result.segmentation.get("names")):
                rows[p.segment].update(
                    {
                        "name": p.name,
                        "activity": p.activity,
                        "description": p.description,
                        "top_categories": [list(c) for c in p.top_categories],
                        "top_items": [list(i) for i in p.top_items],
                        "demographics": p.demographics,
                    }
                )
        except Exception as exc:  # a profile is a nicety; sizes alone still make the table
            log.warning("report: no segment profiles (%s)", exc)
    return [rows[s] for s in sorted(rows)]


def _ndcg_by_segment(result: Any, n_boot: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(seed)
    for name, rep in result.reports.items():
        pu = rep.per_user
        groups = [("all", pu)]
        if "segment" in pu:
            groups += [(int(s), g) for s, g in pu.groupby("segment", sort=True) if int(s) >= 0]
        for key, g in groups:
            mean, lo, hi = mean_ci(g[METRIC].to_numpy(), n_boot=n_boot, rng=rng)
            rows.append(
                {"system": name, "group": key, "users": int(len(g)), "mean": mean, "lo": lo, "hi": hi}
            )
    return rows


def _terciles(result: Any) -> dict[str, Any]:
    rows, users, cuts = [], {}, None
    for name, rep in result.reports.items():
        act = rep.by("activity", [METRIC, "recall@10"])
        users = {str(t): int(n) for t, n in act["users"].items()}
        cuts = list(rep.terciles)
        rows.append({"system": name, **{str(t): float(v) for t, v in act[METRIC].items()}})
    return {"cuts": cuts, "users": users, "rows": rows}


def _costs(result: Any, costs: dict[str, dict[str, float]] | None) -> list[dict[str, Any]]:
    if costs is None:
        from ..evaluate.cost import cost_figures

        costs = cost_figures(result.systems)
    rows = []
    for name in result.systems:
        rep = result.reports.get(name)
        rows.append(
            {
                "system": name,
                METRIC: rep.overall[METRIC] if rep else None,
                "fit_seconds": result.fit_seconds.get(name),
                **costs.get(name, {}),
            }
        )
    return rows


def _routing(model: Any) -> dict[str, Any] | None:
    routing = getattr(model, "routing_", None)
    if not routing:
        return None
    cfg = model.config
    out: dict[str, Any] = {
        "policy": cfg.policy.kind,
        "default_tier": cfg.policy.default_tier,
        "fallback": list(cfg.fallback),
        "routing": {int(s): t for s, t in routing.items()},
        "validation": [],
        "options": [],
    }
    table = getattr(model, "validation_", None)
    if table is not None and len(table):
        out["validation"] = table.to_dict(orient="records")
        from ..route.policy import routing_summary

        segs = sorted(int(s) for s in table["segment"].unique())
        options = [(f"all {t}", {s: t for s in segs}) for t in table["tier"].unique()]
        options.append((f"{cfg.policy.kind} (chosen)", {int(s): t for s, t in routing.items()}))
        for label, choice in options:
            summary = routing_summary(table, choice)
            out["options"].append({"name": label, METRIC: summary[METRIC], "flops": summary.get("flops")})
    return out


def _curves(result: Any) -> dict[str, list[dict[str, float]]]:
    curves: dict[str, list[dict[str, float]]] = {}
    for name, model in result.systems.items():
        curve = getattr(model, "curve_", None)
        if curve:
            curves[name] = list(curve)
        for tier, sub in (getattr(model, "tiers_", None) or {}).items():
            sub_curve = getattr(sub, "curve_", None)
            # a tier reused from a standalone system is the same object: show it once
            if sub_curve and not any(sub is m for m in result.systems.values()):
                curves[f"{name}/{tier}"] = list(sub_curve)
    return curves


def build_report_data(
    result: Any,
    *,
    costs: dict[str, dict[str, float]] | None = None,
    n_boot: int | None = None,
    max_map_users: int = 3000,
) -> dict[str, Any]:
    """The report payload of a finished run.

    Args:
        result: A :class:`~segrec.experiment.RunResult`.
        costs: system -> ``n_parameters``, ``flops_per_request``, ``memory_bytes``
            (as written to the manifest); None computes them.
        n_boot: Bootstrap resamples per CI (default: the run config's ``evaluate.n_boot``).
        max_map_users: Most users drawn on the user map.

    Returns:
        A JSON-able dict (see :func:`segrec.report.render_report`).
    """
    from .. import __version__
    from ..experiment import adaptation_records

    cfg = result.config
    n_boot = int(n_boot or cfg.evaluate.n_boot)
    fit = result.split.fit if result.split is not None else result.data
    seg_model = result.systems.get("segmented")
    routing = _routing(seg_model) if seg_model is not None else None
    if routing is not None:  # what serves each segment and what it is honestly worth (issue 14)
        from .verdict import segment_rows, verdict

        routing["verdict"] = verdict(result)
        routing["served"] = segment_rows(result)
    table = result.table()
    payload = {
        "version": PAYLOAD_VERSION,
        "meta": {
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "segrec_version": __version__,
            "seed": cfg.seed,
            "best_system": result.best_system() if result.systems else None,
            "test_winner": result.test_winner(),
            "systems": list(result.systems),
            "skipped": dict(result.skipped),
        },
        "dataset": _dataset(result),
        "segmentation": {k: v for k, v in result.segmentation.items() if k != "method_selection"},
        "segments": _segments(result, fit, (routing or {}).get("routing", {})),
        "map": None,
        "overall": [] if table.empty else table.reset_index().to_dict(orient="records"),
        "ndcg_by_segment": {
            "metric": METRIC,
            "n_boot": n_boot,
            "rows": _ndcg_by_segment(result, n_boot, cfg.seed),
        },
        "terciles": _terciles(result),
        "comparisons": {k: v.reset_index().to_dict(orient="records") for k, v in result.comparisons.items()},
        "adaptation": adaptation_records(result),
        "costs": _costs(result, costs),
        "routing": routing,
        "curves": _curves(result),
    }
    if (np.asarray(result.segments) >= 0).any() and fit.n_users > 1:
        try:
            payload["map"] = user_map(fit, result.segments, max_users=max_map_users, seed=cfg.seed)
        except Exception as exc:  # e.g. a degenerate matrix; the rest of the report stands
            log.warning("report: no user map (%s)", exc)
    return clean(payload)


def payload_from_results(results: dict[str, Any], manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reduced payload from ``results.json`` (and ``manifest.json``) of a run without ``report.json``.

    Runs saved before the report existed still get a page: dataset summary, segment
    sizes, per-segment NDCG@10 (no CIs, no map, no profiles), terciles, costs and routing.
    """
    manifest = manifest or {}
    systems = results.get("systems", {})
    seg_rows, terc_rows, cuts = [], [], None
    for name, rep in systems.items():
        seg_rows.append(
            {"system": name, "group": "all", "users": rep.get("users"), "mean": rep["overall"].get(METRIC)}
        )
        for s, row in (rep.get("segments") or {}).items():
            seg_rows.append(
                {"system": name, "group": int(s), "users": row.get("users"), "mean": row.get(METRIC)}
            )
        terc_rows.append({"system": name, **rep.get("terciles", {}).get(METRIC, {})})
        cuts = rep.get("terciles", {}).get("cuts", cuts)
    routing = {int(s): t for s, t in (results.get("routing") or {}).items()}
    sizes = results.get("segment_sizes", {})
    total = max(sum(sizes.values()), 1)
    costs = manifest.get("costs", {})
    return clean(
        {
            "version": PAYLOAD_VERSION,
            "meta": {
                "created_at": manifest.get("created_at"),
                "segrec_version": manifest.get("segrec_version"),
                "best_system": results.get("best_system"),
                "systems": list(manifest.get("systems", systems)),
                "skipped": results.get("skipped", {}),
                "reduced": True,
            },
            "dataset": results.get("data", {}),
            "segmentation": {
                k: v for k, v in results.get("segmentation", {}).items() if k != "method_selection"
            },
            "segments": [
                {
                    "segment": int(s),
                    "name": f"segment {s}",
                    "size": n,
                    "share": n / total,
                    "tier": routing.get(int(s)),
                }
                for s, n in sorted(sizes.items(), key=lambda kv: int(kv[0]))
                if int(s) >= 0
            ],
            "map": None,
            "overall": [
                {"system": n, **rep["overall"], "fit_s": rep.get("fit_seconds")} for n, rep in systems.items()
            ],
            "ndcg_by_segment": {"metric": METRIC, "n_boot": 0, "rows": seg_rows},
            "terciles": {"cuts": cuts, "users": {}, "rows": terc_rows},
            "comparisons": results.get("comparisons", {}),
            "adaptation": results.get("adaptation", []),
            "costs": [
                {
                    "system": n,
                    METRIC: systems.get(n, {}).get("overall", {}).get(METRIC),
                    "fit_seconds": results.get("fit_seconds", {}).get(n),
                    **costs.get(n, {}),
                }
                for n in manifest.get("systems", systems)
            ],
            "routing": {
                "policy": None,
                "default_tier": None,
                "fallback": [],
                "routing": routing,
                "validation": [],
                "options": [],
            }
            if routing
            else None,
            "curves": results.get("training_curves", {}),
        }
    )
