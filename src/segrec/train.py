"""The main job: data -> split -> segments -> every system fitted -> evaluated -> saved.

``run_experiment(config, data)`` is what ``segrec run`` and
``benchmarks/bench_quality.py`` call, so the CLI and the benchmark report the
same numbers. ``save_run`` writes the artifacts; ``load_run`` reads them back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import RunConfig
from .distributed.executor import Executor, make_executor
from .errors import MissingDependencyError, SegrecError
from .evaluate import EvalReport, bootstrap_diff, evaluate
from .io import atomic_dir, read_json, read_table, write_json, write_table
from .models import (
    EASERecommender,
    ItemKNNRecommender,
    PerSegmentRecommender,
    PopularityRecommender,
    Recommender,
    SegmentedRecommender,
)
from .split import temporal_split
from .types import Interactions, Split

__all__ = ["RunResult", "build_system", "load_run", "run_experiment", "save_run"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


#: Lighter Transformer / adapter settings for the built-in synthetic data only, so the
#: demo `segrec run` fits in about two minutes on 2 CPU cores. Real data (--data) gets
#: the models' own defaults; explicit [models.transformer] / [models.adapter] keys win.
DEMO_TRANSFORMER = {"max_len": 50, "epochs": 15, "patience": 3, "target_window": 1, "exclude_seen": False}
DEMO_ADAPTER = {"epochs": 8, "patience": 2}


def _transformer(cfg: RunConfig) -> Recommender:
    from .models.transformer import TransformerRecommender

    demo = DEMO_TRANSFORMER if cfg.data.path is None else {}
    return TransformerRecommender(**{"random_state": cfg.seed, "device": cfg.device, **demo,
                                     **cfg.models.transformer})


def _adapted(cfg: RunConfig) -> Recommender:
    from .models.adapters import AdaptedTransformerRecommender

    demo = DEMO_ADAPTER if cfg.data.path is None else {}
    return AdaptedTransformerRecommender(**{"random_state": cfg.seed, "device": cfg.device, **demo,
                                            **cfg.models.adapter})


def _als(cfg: RunConfig) -> Recommender:
    from .models.mf import ALSRecommender

    return ALSRecommender(random_state=cfg.seed)


def _multvae(cfg: RunConfig) -> Recommender:
    from .models.multvae import MultVAERecommender

    extra = {"device": cfg.device} if "device" in MultVAERecommender.Config.model_fields else {}
    return MultVAERecommender(random_state=cfg.seed, **extra)


#: system name -> builder of the unfitted model; one explicit dict (no string imports).
SYSTEMS: dict[str, Callable[[RunConfig], Recommender]] = {
    "popularity": lambda cfg: PopularityRecommender(),
    "itemknn": lambda cfg: ItemKNNRecommender(),
    "ease": lambda cfg: EASERecommender(),
    "als": _als,
    "multvae": _multvae,
    "transformer": _transformer,
    "adapted_transformer": _adapted,
    "local_ease": lambda cfg: PerSegmentRecommender(
        base="ease", min_segment_users=cfg.models.min_segment_users),
}

#: tier name inside the segmented system -> the system that provides it.
TIERS = {"adapted": "adapted_transformer", "global": "transformer", "local": "local_ease",
         "popularity": "popularity"}


def build_system(name: str, cfg: RunConfig) -> Recommender:
    """An unfitted system by name (see :data:`SYSTEMS`; ``segmented`` is built by the run)."""
    if name not in SYSTEMS:
        raise SegrecError(f"unknown system {name!r}; known: {sorted([*SYSTEMS, 'segmented'])}")
    return SYSTEMS[name](cfg)


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

    def best_system(self) -> str:
        """The system with the highest test NDCG@10, else ``segmented`` or the first fitted."""
        if self.reports:
            return max(self.reports, key=lambda n: self.reports[n].overall["ndcg@10"])
        return "segmented" if "segmented" in self.systems else next(iter(self.systems))


def load_data(cfg: RunConfig) -> tuple[Interactions, np.ndarray | None]:
    """The run's dataset: the configured file, or the built-in synthetic data.

    Returns:
        ``(interactions, true_segments)``; true segments only for synthetic data.
    """
    from .data import load_interactions
    from .data.synthetic import generate_synthetic

    if cfg.data.path:
        return load_interactions(cfg.data.path, items=cfg.data.items, users=cfg.data.users), None
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


def segment_users(train: Interactions, cfg: RunConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Segment the users of ``train`` as configured; returns labels per dense user and info."""
    from .segment import segment_interactions

    seg = segment_interactions(train, method=cfg.segmentation.method, n_segments=cfg.segmentation.n_segments,
                               text=cfg.segmentation.text, random_state=cfg.seed,
                               cache_dir=cfg.segmentation.embedding_cache)
    return np.asarray(seg.labels, dtype=np.int64), seg.summary()


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
    own = executor is None
    executor = make_executor(cfg.ray) if own else executor
    try:
        return _run(cfg, data, progress, executor, bars)
    finally:
        if own and hasattr(executor, "close"):
            executor.close()


def fit_system(model: Recommender, train: Interactions, valid: Interactions | None,
               params: dict[str, Any], executor: Executor) -> Recommender:
    """Fit one system, handing it the executor where it can use one.

    Per-segment models (``uses_executor``) get ``executor=``; a model that trains
    data-parallel (``supports_data_parallel``, the Transformer) goes through
    ``executor.fit_data_parallel`` when the executor has it (Ray Train under the Ray executor).

    Returns:
        The fitted model (a new object when it was trained data-parallel).
    """
    if getattr(model, "uses_executor", False):
        params = {**params, "executor": executor}
    parallel = getattr(executor, "fit_data_parallel", None)
    if parallel is not None and getattr(model, "supports_data_parallel", False) and not params:
        return parallel(model, train, valid=valid)
    return model.fit(train, valid=valid, **params)


def _run(cfg: RunConfig, data: Interactions | None, progress: Progress | None,
         executor: Executor, bars: bool = False) -> RunResult:
    say = progress or (lambda msg: log.info(msg))
    unknown = [n for n in cfg.models.systems if n not in SYSTEMS and n != "segmented"]
    if unknown:  # fail before any expensive step
        raise SegrecError(f"unknown system {unknown[0]!r}; known: {sorted([*SYSTEMS, 'segmented'])}")
    truth = None
    if data is None:
        say("loading data")
        data, truth = load_data(cfg)
    if cfg.split.no_split:
        split = None
        train, valid = data, None
    else:
        split = temporal_split(data, cfg.split.ratios)
        train, valid = split.train, split.valid
    say(f"segmenting {train.n_users} users")
    segments, seg_info = segment_users(train, cfg)
    if truth is not None:  # synthetic data: how well were the planted segments recovered?
        from sklearn.metrics import adjusted_rand_score

        seg_info = {**seg_info, "planted_ari": float(adjusted_rand_score(truth, segments))}
    result = RunResult(cfg, data, split, segments, seg_info)

    names = [n for n in cfg.models.systems if n != "segmented"]
    explicit = {**cfg.models.transformer, **cfg.models.adapter}  # settings the config fixes itself
    for name in names:
        say(f"fitting {name}")
        try:
            model = build_system(name, cfg)
        except (ImportError, MissingDependencyError) as exc:
            result.skipped[name] = str(exc)
            log.warning("skipping %s: %s", name, exc)
            continue
        if bars and "show_progress" in model.Config.model_fields and "show_progress" not in explicit:
            model = model.with_params(show_progress=True)  # a long fit should not look hung
        params: dict[str, Any] = {}
        if getattr(getattr(model, "config", None), "item_init", None) == "text":
            say(f"{name}: item embeddings from item texts")
            model.set_item_init(item_text_embeddings(train, cfg))
        if getattr(model, "segment_aware", False):
            params["segments"] = segments
        if getattr(model, "needs_global", False) and "transformer" in result.systems:
            params["global_model"] = result.systems["transformer"]
        start = time.perf_counter()
        model = fit_system(model, train, valid, params, executor)
        result.fit_seconds[name] = time.perf_counter() - start
        result.systems[name] = model
        _note_failures(result, name, model)
    if "segmented" in cfg.models.systems:
        tiers = {tier: build_system(sys_name, cfg) for tier, sys_name in TIERS.items()
                 if sys_name in result.systems}
        if "global" not in tiers:  # no Transformer: EASE is the large tier
            tiers["global"] = build_system("ease", cfg)
        say(f"fitting segmented (routing {len(tiers)} tiers: {', '.join(tiers)})")
        prefitted = {tier: result.systems[TIERS[tier]] for tier in tiers if TIERS.get(tier) in result.systems}
        start = time.perf_counter()
        seg_model = SegmentedRecommender(tiers).fit(train, valid=valid, segments=segments,
                                                    prefitted=prefitted)
        # tiers reused from the rows above: count their fit time too, honestly
        result.fit_seconds["segmented"] = time.perf_counter() - start + sum(
            result.fit_seconds.get(TIERS[t], 0.0) for t in prefitted)
        result.systems["segmented"] = seg_model
    if split is not None:
        for name, model in result.systems.items():
            say(f"evaluating {name}")
            result.reports[name] = evaluate(model, split, segments=segments, ks=cfg.evaluate.ks, system=name)
        _compare(result)
    return result


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
        "comparisons": {k: v.reset_index().to_dict(orient="records") for k, v in result.comparisons.items()},
        "routing": {str(k): v for k, v in getattr(result.systems.get("segmented"), "routing_", {}).items()},
        # why each segment was (not) adapted: the validation numbers the fit decided on
        "adaptation": adaptation_records(result),
        "skipped": result.skipped,
        "failed_segments": {n: {str(k): v for k, v in f.items()} for n, f in result.failed_segments.items()},
        # per-epoch loss / validation NDCG of the neural systems, for the report (issue 7)
        "training_curves": {n: list(getattr(m, "curve_", None) or []) for n, m in result.systems.items()
                            if getattr(m, "curve_", None)},
        "best_system": result.best_system() if result.systems else None,
    }


def save_run(result: RunResult, out: str | Path) -> Path:
    """Write the run's artifacts to ``out`` atomically, with a checksummed manifest.

    Layout: ``results.json``, ``manifest.json``, ``segments.parquet`` (user_id,
    segment), ``systems/<name>/`` (one saved Recommender each), ``items.parquet``
    (titles for serving, when the data has them), ``router/`` (the new-user
    segment assigner), ``report.json`` + ``report.html`` (the self-contained
    HTML report, :mod:`segrec.report`). ``manifest.json`` records versions, the resolved config,
    the data fingerprint, the headline metrics, analytic costs and the sha256 of
    every other file; :func:`load_run` verifies them.
    """
    from .route.assign import ProfileAssigner

    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "systems").mkdir()
        for name, model in result.systems.items():
            (tmp / "systems" / name).mkdir()
            model.save_into(tmp / "systems" / name)
        write_table(tmp / "segments.parquet", pd.DataFrame({
            "user_id": result.data.user_vocab.ids.astype(str), "segment": result.segments}))
        if result.data.item_table is not None:
            items = result.data.item_table.copy()
            if "item_id" not in items:
                items.insert(0, "item_id", result.data.item_vocab.ids.astype(str))
            write_table(tmp / "items.parquet", items.astype({c: str for c in items.columns
                                                              if items[c].dtype == object}))
        if (np.asarray(result.segments) >= 0).any():
            fit = result.split.fit if result.split is not None else result.data
            (tmp / "router").mkdir()
            ProfileAssigner().fit(fit, result.segments).save_into(tmp / "router")
        summary = results_dict(result)
        write_json(tmp / "results.json", summary)
        costs = _costs(result.systems)
        _write_report(result, tmp, costs)
        write_json(tmp / MANIFEST, _manifest(result, summary, tmp, costs))
    return out


def _write_report(result: RunResult, directory: Path, costs: dict[str, dict[str, float]]) -> None:
    """``report.json`` + ``report.html`` (issue 7); a report failure never loses a finished run."""
    from .report import REPORT_DATA, REPORT_HTML, build_report_data, write_report

    try:
        payload = build_report_data(result, costs=costs)
        write_json(directory / REPORT_DATA, payload)
        write_report(payload, directory / REPORT_HTML)
    except Exception as exc:
        log.warning("no HTML report: %s", exc, exc_info=True)


#: name of the manifest file of a run directory
MANIFEST = "manifest.json"
#: bumped when the run-directory layout changes incompatibly
FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from . import __version__

    out = {"segrec": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "pandas", "pyarrow", "torch", "safetensors", "pydantic", "scikit-learn"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_table(root: Path) -> dict[str, dict[str, Any]]:
    return {f.relative_to(root).as_posix(): {"sha256": _sha256(f), "bytes": f.stat().st_size}
            for f in sorted(root.rglob("*")) if f.is_file() and f.name != MANIFEST}


def _costs(systems: dict[str, Recommender]) -> dict[str, dict[str, float]]:
    from .evaluate.cost import memory_bytes

    costs = {}
    for name, model in systems.items():
        try:
            costs[name] = {"n_parameters": int(model.n_parameters()),
                           "flops_per_request": float(np.mean(model.flops_per_request())),
                           "memory_bytes": int(memory_bytes(model))}
        except Exception as exc:  # cost accounting must never lose a finished run
            log.warning("no cost figures for %s: %s", name, exc)
    return costs


def _manifest(result: RunResult, summary: dict[str, Any], root: Path,
              costs: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    import datetime as _dt

    from . import __version__

    return {
        "format": "segrec-run", "format_version": FORMAT_VERSION, "segrec_version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(), "versions": _versions(),
        "systems": sorted(result.systems), "best_system": summary["best_system"],
        "data_fingerprint": summary["data"]["fingerprint"], "data": summary["data"],
        "config": summary["config"],
        "metrics": {n: {k: v for k, v in s["overall"].items() if k in ("ndcg@10", "recall@10", "ndcg@20")}
                    for n, s in summary["systems"].items()},
        "costs": _costs(result.systems) if costs is None else costs,
        "files": _file_table(root),
    }


def verify_run(path: str | Path, manifest: dict[str, Any] | None = None) -> None:
    """Check every file of a run directory against the manifest's sha256 checksums.

    Raises:
        SegrecError: A listed file is missing, has another size or checksum
            (the message names the file and both digests).
    """
    import warnings

    from . import __version__
    from .errors import SegrecWarning

    path = Path(path)
    manifest = manifest if manifest is not None else read_json(path / MANIFEST)
    files = manifest.get("files")
    if files is None:
        warnings.warn(f"{path}: the manifest has no checksums (written before segrec 0.1 issue 5); "
                      "files are not verified. Re-save the run to add them.", SegrecWarning, stacklevel=3)
        return
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise SegrecError(f"{path}: file {rel} listed in {MANIFEST} is missing; "
                              "the artifact is incomplete")
        if f.stat().st_size != want["bytes"]:
            raise SegrecError(f"{path}: {rel} has {f.stat().st_size} bytes, expected {want['bytes']} "
                              f"({MANIFEST}); the file was truncated or modified after saving")
        got = _sha256(f)
        if got != want["sha256"]:
            raise SegrecError(f"{path}: checksum mismatch for {rel}: expected sha256 "
                              f"{want['sha256'][:16]}..., found {got[:16]}...; "
                              "the file was modified after saving")
    extra = sorted(set(_listed(path)) - set(files))
    if extra:
        warnings.warn(f"{path}: files not in the manifest are ignored: {extra[:5]}", SegrecWarning,
                      stacklevel=3)
    saved = manifest.get("segrec_version")
    if saved and saved != __version__:
        warnings.warn(f"{path}: written by segrec {saved}, loading with {__version__}; results may differ",
                      SegrecWarning, stacklevel=3)


def _listed(path: Path) -> list[str]:
    return [f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file() and f.name != MANIFEST]


@dataclass
class LoadedRun:
    """Saved systems and results read back by :func:`load_run`."""

    path: Path
    manifest: dict[str, Any]
    results: dict[str, Any]

    @property
    def system_names(self) -> list[str]:
        """Names of the saved systems."""
        return list(self.manifest["systems"])

    def system(self, name: str | None = None) -> Recommender:
        """Load one saved system (default: the run's best)."""
        name = name or self.manifest.get("best_system")
        if name not in self.manifest["systems"]:
            raise SegrecError(f"{self.path}: no system {name!r}; saved: {', '.join(self.system_names)}")
        return Recommender.load(self.path / "systems" / name)

    def segments(self) -> pd.DataFrame:
        """The saved user -> segment table."""
        return read_table(self.path / "segments.parquet")

    def items(self) -> pd.DataFrame | None:
        """The saved items table (``item_id``, ``title``, ...), or None."""
        f = self.path / "items.parquet"
        return read_table(f) if f.exists() else None

    def router(self, system: str | None = None, **routing: Any):
        """A :class:`~segrec.route.router.Router` serving one saved system.

        Args:
            system: System to serve; default ``segmented`` when saved, else the run's best.
            **routing: Policy changes for a segmented system, e.g. ``policy="budget",
                budget_fraction=0.3`` (re-routed from the saved validation table, no refit).
        """
        from .route.assign import ProfileAssigner
        from .route.router import Router

        name = system or ("segmented" if "segmented" in self.system_names else None)
        model = self.system(name)
        if routing:
            if not hasattr(model, "reroute"):
                raise SegrecError(f"system {model.name!r} is not routed; a routing policy needs 'segmented'")
            model = model.reroute(**routing)
        seg = self.segments()
        segments = None
        if len(seg):
            table = pd.Series(seg["segment"].to_numpy(np.int64), index=seg["user_id"].astype(str))
            segments = table.reindex(model.user_vocab_.ids).fillna(-1).to_numpy(np.int64)
        assigner = ProfileAssigner.load(self.path / "router") if (self.path / "router").is_dir() else None
        titles, items = None, self.items()
        if items is not None and "title" in items:
            titles = items.set_index(items["item_id"].astype(str))["title"].reindex(model.item_vocab_.ids)
            titles = titles.to_numpy(dtype=object)
        cfg = getattr(model, "config", None)
        info = {"path": str(self.path), "system": model.name if name is None else name,
                "data_fingerprint": self.manifest.get("data_fingerprint"),
                "created_at": self.manifest.get("created_at"),
                "policy": getattr(cfg, "policy", None)}
        return Router(model, segments=segments, assigner=assigner, titles=titles, info=info)


def load_run(path: str | Path, *, verify: bool = True) -> LoadedRun:
    """Open an artifact directory written by :func:`save_run`.

    Args:
        path: The run directory.
        verify: Check every file against the manifest's checksums first.

    Raises:
        SegrecError: Not a run directory, or a file is missing or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        raise SegrecError(f"{path}: not a directory; pass the --out directory of `segrec run`")
    manifest = read_json(path / MANIFEST)
    if verify:
        verify_run(path, manifest)
    return LoadedRun(path, manifest, read_json(path / "results.json"))
