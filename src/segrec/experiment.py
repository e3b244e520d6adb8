"""The experiment: data -> split -> segments -> every system fitted -> evaluated and compared.

``run_experiment(config, data)`` is what ``segrec run`` and
``benchmarks/bench_quality.py`` call, so the CLI and the benchmark report the same
numbers. The systems are built by :mod:`segrec.systems` as members of one
:class:`~segrec.route.SegmentedRecommender`, whose own ``fit`` segments the users,
fits the members in order and routes; this module only loads, splits, evaluates
and compares. Saving and loading the result is :mod:`segrec.artifacts`. Every stage is timed
(:mod:`segrec.stages`), so a run says where its time and memory went.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .config import RunConfig
from .data.validate import check_usable
from .distributed import Executor, make_executor
from .errors import MissingDependencyError
from .evaluate import EvalReport, bootstrap_diff, evaluate
from .models import FitContext, Recommender, get_tags
from .route import SegmentedRecommender
from .split import temporal_split
from .stages import StageLog
from .systems import PRESETS, build_composite, build_system, check_model_tables, member_names, preset_in_use
from .types import Interactions, Split

__all__ = ["RunResult", "adaptation_records", "adaptation_table", "load_data", "results_dict",
           "run_experiment", "training_curves"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class RunResult:
    """Everything one run produced.

    Attributes:
        config: The resolved run config.
        data: The full dataset.
        split: The protocol split (None with ``no_split``).
        segments: int array (n_users,), segment per dense user.
        segmentation: Method, K and quality figures of the segmentation.
        systems: name -> fitted Recommender.
        reports: name -> EvalReport on the test part (empty with ``no_split``).
        comparisons: name -> DataFrame of bootstrap CIs (per segment and overall).
        fit_seconds: name -> wall seconds of ``fit``.
        skipped: name -> why the system was not run; also ``"<system> segment <k>"`` for a
            segment whose per-segment fit failed on every attempt (issue 6).
        failed_segments: system -> {segment: why}: segments served by the fallback
            because their per-segment task failed on every attempt.
        stages: Wall time, CPU time and peak memory of every stage of the run.
        composite: The fitted segment-aware composite holding every system as a member.
        segmenter: Its fitted segmentation pipeline (places new users for every saved system).
        preset: The named model preset the run applied (``demo`` / ``none``).
    """

    config: RunConfig
    data: Interactions
    split: Split | None
    segments: np.ndarray
    segmentation: dict[str, Any]
    systems: dict[str, Recommender] = field(default_factory=dict)
    reports: dict[str, EvalReport] = field(default_factory=dict)
    comparisons: dict[str, pd.DataFrame] = field(default_factory=dict)
    fit_seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed_segments: dict[str, dict[int, str]] = field(default_factory=dict)
    stages: StageLog = field(default_factory=StageLog)
    composite: SegmentedRecommender | None = None
    segmenter: Any = None
    preset: str = "none"

    def table(self) -> pd.DataFrame:
        """One row per evaluated system: overall metrics, terciles and fit time."""
        rows = []
        for name, rep in self.reports.items():
            act = rep.by("activity")["ndcg@10"]
            rows.append({"system": name, **{k: rep.overall[k] for k in (
                "ndcg@10", "recall@10", "hit_rate@10", "mrr@10", "ndcg@20", "recall@20", "coverage@10")},
                **{f"ndcg@10 {t}": act.get(t, np.nan) for t in ("light", "medium", "heavy")},
                "fit_s": self.fit_seconds.get(name, np.nan)})
        return pd.DataFrame(rows).set_index("system") if rows else pd.DataFrame()

    def validation(self) -> dict[str, float]:
        """Inner-validation NDCG@10 of every system that has one, by which the served system is chosen.

        A plain system: its mean over the inner valid users (fitted on the inner train part
        only). ``segmented``: its honest, cross-fitted estimate (:mod:`segrec.route.selection`).
        """
        summary = getattr(self.composite, "selection_", None) or {}
        tiers = summary.get("systems") or {}
        out = {name: float(tiers[_tier_of(self, name)]) for name in self.systems
               if name != "segmented" and _tier_of(self, name) in tiers}
        if "segmented" in self.systems and summary.get("honest_ndcg") is not None:
            out["segmented"] = float(summary["honest_ndcg"])
        return out

    def best_system(self) -> str:
        """The served default: the system with the best inner-validation NDCG@10 — never chosen on test.

        ``segmented`` when its honest (cross-fitted) gain over the best single system under
        the same cross-fit clears ``gate_z`` standard errors (the rule that moves a segment),
        else the best single system itself (the simpler of two equals). Without a validation
        table: ``segmented`` if fitted, else the first system.
        """
        summary = getattr(self.composite, "selection_", None) or {}
        if summary.get("systems"):
            best_tier = summary.get("best_single")
            single = next((n for n in self.systems
                           if n != "segmented" and _tier_of(self, n) == best_tier), None)
            routed = "segmented" in self.systems and bool(summary.get("routing_pays"))
            if routed or (single is None and "segmented" in self.systems):
                return "segmented"
            if single is not None:
                return single
        return "segmented" if "segmented" in self.systems else next(iter(self.systems))

    def test_winner(self) -> str | None:
        """The system with the highest test NDCG@10 (reported beside the served one; never picks it)."""
        if not self.reports:
            return None
        return max(self.reports, key=lambda n: self.reports[n].overall["ndcg@10"])


def _tier_of(result: RunResult, system: str) -> str | None:
    """The composite member that is ``system`` (the same fitted object)."""
    tiers = getattr(result.composite, "tiers_", None) or {}
    model = result.systems.get(system)
    return next((t for t, m in tiers.items() if m is model), None)


def load_data(cfg: RunConfig) -> tuple[Interactions, np.ndarray | None]:
    """The run's dataset: the configured file, or the built-in synthetic data.

    Returns:
        ``(interactions, true_segments)``; true segments only for synthetic data.
    """
    from .data import load_interactions
    from .data.schema import Schema
    from .data.synthetic import generate_synthetic

    if cfg.data.path:
        fields = cfg.data.schema_fields()
        return load_interactions(cfg.data.path, schema=Schema(**fields) if fields else None,
                                 items=cfg.data.items, users=cfg.data.users), None
    synth = generate_synthetic(n_users=cfg.data.synthetic_users, n_items=cfg.data.synthetic_items,
                               n_segments=cfg.data.synthetic_segments, seed=cfg.seed)
    data = dataclasses.replace(synth.to_interactions(), source=(
        f"built-in synthetic data ({cfg.data.synthetic_users} users, {cfg.data.synthetic_items} items, "
        f"{cfg.data.synthetic_segments} planted segments, seed {cfg.seed})"))
    return data, synth.segment_labels(data.user_vocab)


def item_text_embeddings(data: Interactions, cfg: RunConfig, embedder: Any = None) -> np.ndarray:
    """Item embeddings (dense item order) from the items table's title and categories.

    The same pretrained language model and cache as the segmentation's text features,
    for a Transformer configured with ``item_init = "text"``.

    Raises:
        ConfigError: The data has no items table, or it has no text columns.
    """
    from .errors import ConfigError
    from .features.text import SentenceTransformerEmbedder, embed_cached, item_texts

    table = data.item_table
    if table is None or not {"title", "categories"} & set(table.columns):
        raise ConfigError("item_init = 'text' needs an items table with a title or categories column "
                          "(segrec run --items FILE); or set item_init = 'random'", key="item_init")
    texts = item_texts(table, data.n_items)
    return embed_cached(embedder or SentenceTransformerEmbedder(), texts, cfg.segmentation.embedding_cache)


def run_experiment(cfg: RunConfig, data: Interactions | None = None, *,
                   progress: Progress | None = None, executor: Executor | None = None,
                   bars: bool = False) -> RunResult:
    """Fit every configured system on one split and evaluate them all by the protocol.

    Args:
        cfg: The run config.
        data: The dataset; None loads it as ``cfg.data`` says.
        progress: Called with a short message before each step (the CLI shows it).
        executor: Where per-segment fits run and how the global Transformer trains;
            None builds one from ``cfg.ray`` (local by default) and closes it at the end.
        bars: Per-epoch progress bars (loss, validation NDCG@10) for the models that
            train in epochs, unless the config sets their ``show_progress`` itself.
    """
    check_model_tables(cfg)  # a wrong [models.*] key fails before any data is read
    own = executor is None
    executor = make_executor(cfg.ray) if own else executor
    try:
        return _run(cfg, data, progress, executor, bars)
    finally:
        if own:
            executor.close()


def _build_members(cfg: RunConfig, result: RunResult, bars: bool) -> dict[str, str]:
    """Build every configured system; returns system -> member name (skipped ones left out)."""
    names = [n for n in cfg.models.systems if n != "segmented"]
    built = {}
    for name in names:
        try:
            built[name] = build_system(name, cfg, progress_bars=bars)
        except (ImportError, MissingDependencyError) as exc:
            result.skipped[name] = str(exc)
            log.warning("skipping %s: %s", name, exc)
    members = member_names(list(built))
    result.composite = build_composite(cfg, list(cfg.models.systems),
                                       {members[n]: m for n, m in built.items()})
    return members


def _run(cfg: RunConfig, data: Interactions | None, progress: Progress | None,
         executor: Executor, bars: bool = False) -> RunResult:
    say = progress or (lambda msg: log.info(msg))
    stages = StageLog()
    truth = None
    preset = preset_in_use(cfg)
    if preset != "none":
        say(f"models: preset {preset!r} ({describe_preset(preset)}); [models] preset = \"none\" "
            "for the models' own defaults")
    if data is None:
        say("loading data")
        with stages.stage("load"):
            data, truth = load_data(cfg)
    check_usable(data, split=not cfg.split.no_split)
    if cfg.split.no_split:
        split = None
        train, valid = data, None
    else:
        with stages.stage("split"):
            split = temporal_split(data, cfg.split.ratios)
        train, valid = split.train, split.valid
    result = RunResult(cfg, data, split, np.empty(0, np.int64), {}, stages=stages, preset=preset)
    members = _build_members(cfg, result, bars)
    composite = result.composite
    embeddings = None
    # only for a model that cannot do without them: "auto" item init reuses the segmentation's
    if any(get_tags(m).needs_item_embeddings for m in composite.tiers.values()):
        say("item embeddings from item texts")
        with stages.stage("text embeddings"):
            embeddings = item_text_embeddings(train, cfg)
    # the composite runs the whole pipeline: segment, fit every member in order, route
    composite.fit(train, valid=valid, context=FitContext(executor=executor, progress=say, stages=stages,
                                                         item_embeddings=embeddings))
    result.segments = composite.segments_
    result.segmenter = composite.segmenter_
    seg_info = composite.segmenter_.segmentation_.summary()
    if truth is not None:  # synthetic data: how well were the planted segments recovered?
        from sklearn.metrics import adjusted_rand_score

        seg_info = {**seg_info, "planted_ari": float(adjusted_rand_score(truth, result.segments))}
    result.segmentation = seg_info
    for name, member in members.items():
        model = composite.tiers_[member]
        result.systems[name] = model
        result.fit_seconds[name] = composite.member_seconds_[member]
        _note_failures(result, name, model)
    if "segmented" in cfg.models.systems:
        # its members' fits count too, honestly: it could not serve without them
        result.fit_seconds["segmented"] = composite.fit_timings_.get("routing_s", 0.0) + sum(
            composite.member_seconds_.get(t, 0.0) for t in composite.saved_tiers())
        result.systems["segmented"] = composite
    if split is not None:
        for name, model in result.systems.items():
            say(f"evaluating {name}")
            with stages.stage(f"evaluate {name}"):
                result.reports[name] = evaluate(model, split, segments=result.segments, ks=cfg.evaluate.ks,
                                                system=name)
        with stages.stage("bootstrap comparisons"):
            _compare(result)
    return result


def describe_preset(name: str) -> str:
    """The settings a named preset layers under the model tables, in one line."""
    return "; ".join(f"[models.{table}] " + ", ".join(f"{k}={v}" for k, v in values.items())
                     for table, values in PRESETS[name].items())


def _note_failures(result: RunResult, name: str, model: Recommender) -> None:
    """Record segments whose per-segment fit failed on every attempt (served by the fallback)."""
    failed = dict(getattr(model, "failed_segments_", None) or {})
    if not failed:
        return
    result.failed_segments[name] = {int(k): str(v) for k, v in failed.items()}
    for seg, why in sorted(failed.items()):
        result.skipped[f"{name} segment {seg}"] = f"{why}; its users are served by the global model"
        log.warning("%s: segment %s falls back to the global model: %s", name, seg, why)


def _compare(result: RunResult) -> None:
    """Bootstrap CIs of the segment-aware systems against their global counterparts."""
    pairs = [("adapted_transformer", "transformer"), ("segmented", "transformer"),
             ("local_ease", "ease"), ("segmented", "ease")]
    for a, b in pairs:
        if a in result.reports and b in result.reports:
            ra, rb = result.reports[a], result.reports[b]
            overall = bootstrap_diff(ra, rb, n_boot=result.config.evaluate.n_boot, seed=result.config.seed)
            by_seg = bootstrap_diff(ra, rb, by="segment", n_boot=result.config.evaluate.n_boot,
                                    seed=result.config.seed)
            by_seg.index = [f"segment {s}" for s in by_seg.index]
            result.comparisons[f"{a} - {b}"] = pd.concat([overall, by_seg])


def adaptation_table(result: RunResult) -> pd.DataFrame:
    """Per segment: the adapter's inner-valid NDCG@10 against the global model's, and its epochs.

    Empty when no adapted Transformer was fitted. ``adapted`` is False where no adapter
    epoch beat θ_shared on validation, so the segment is served by the global model.
    """
    model = result.systems.get("adapted_transformer")
    info = getattr(model, "segment_info_", None)
    if not info:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(info, orient="index").rename_axis("segment").sort_index()
    table["adapted"] = [int(k) in model.adapters_ for k in table.index]
    keep = [c for c in ("users", "valid_ndcg_global", "valid_ndcg_adapted", "best_epoch", "adapted")
            if c in table]
    return table[keep]


def adaptation_records(result: RunResult) -> list[dict[str, Any]]:
    """:func:`adaptation_table` as JSON-able rows (NaN, e.g. of a segment too small to tune, as None)."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in adaptation_table(result).reset_index().to_dict(orient="records")]


def training_curves(result: RunResult) -> dict[str, list[dict[str, float]]]:
    """Per-epoch loss / validation NDCG of each neural system, and of each segment's adapter tuning."""
    curves = {n: list(getattr(m, "curve_", None) or []) for n, m in result.systems.items()
              if getattr(m, "curve_", None)}
    info = getattr(result.systems.get("adapted_transformer"), "segment_info_", None) or {}
    for k, row in sorted(info.items()):
        if row.get("curve"):
            curves[f"adapted_transformer segment {k}"] = list(row["curve"])
    return curves


def results_dict(result: RunResult) -> dict[str, Any]:
    """JSON-able summary of a run: config, data, segmentation, metrics, CIs, timings."""
    data = result.data
    return {
        "config": result.config.model_dump(mode="json"),
        "data": {"source": data.source, "users": data.n_users, "items": data.n_items,
                 "interactions": len(data), "fingerprint": data.fingerprint()},
        "segmentation": result.segmentation,
        "segment_sizes": {str(k): int(v) for k, v in zip(*np.unique(result.segments, return_counts=True),
                                                          strict=True)},
        "systems": {n: {**rep.to_dict(), "fit_seconds": result.fit_seconds.get(n)}
                    for n, rep in result.reports.items()},
        "fit_seconds": result.fit_seconds,
        # where the run's time and memory went, stage by stage (issue 12)
        "stages": result.stages.to_records(),
        "peak_rss_mb": round(result.stages.peak_mb(), 1),
        "comparisons": {k: v.reset_index().to_dict(orient="records") for k, v in result.comparisons.items()},
        "routing": {str(k): v for k, v in getattr(result.systems.get("segmented"), "routing_", {}).items()},
        # why each segment was (not) adapted: the validation numbers the fit decided on
        "adaptation": adaptation_records(result),
        "skipped": result.skipped,
        "failed_segments": {n: {str(k): v for k, v in f.items()} for n, f in result.failed_segments.items()},
        # per-epoch loss / validation NDCG of the neural systems, for the report (issue 7)
        "training_curves": training_curves(result),
        # the served default is chosen on inner validation; the test winner is only reported
        "best_system": result.best_system() if result.systems else None,
        "test_winner": result.test_winner(),
        "validation": result.validation(),
        "selection": getattr(result.composite, "selection_", None),
    }
