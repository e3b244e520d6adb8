"""Run segrec's per-segment work as Ray tasks and the global Transformer on Ray Train.

The only module of segrec that imports Ray (extra ``ray``: ``pip install 'segrec[ray]'``),
and only when a :class:`RayExecutor` is first used.

* :meth:`RayExecutor.map` runs one Ray task per item (per segment, per candidate K)
  with ``num_cpus_per_task`` / ``num_gpus_per_task``; the shared training data is
  ``ray.put`` once per call and every task reads it from the object store (numpy
  arrays zero-copy on the same node). A task that raises or whose worker process
  dies is retried ``max_retries`` times by Ray; one that still fails is returned
  as a :class:`~segrec.distributed.executor.TaskFailure` (``on_error="return"``)
  while every other task's result is kept.
* :meth:`RayExecutor.fit_data_parallel` trains a
  :class:`~segrec.models.transformer.TransformerRecommender` data-parallel with Ray
  Train's ``TorchTrainer`` (torch DDP; gloo on CPU, nccl on GPU). Each worker runs the
  model's own ``fit`` with a :class:`~segrec.distributed.ddp.TorchDataParallel` hook;
  rank 0 saves the fitted model in segrec's artifact format (safetensors + JSON) as the
  Ray Train checkpoint, which the driver loads back.

Pickle (through Ray) is used only to move objects between processes of one run;
nothing here writes a pickle artifact.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelFitError, require
from .executor import _NO_SHARED, OnError, TaskFailure, _describe, task_labels

__all__ = ["RayExecutor"]

log = logging.getLogger(__name__)

#: file of the rank-0 checkpoint holding the early-stopping run's best weights (adapters need them)
INNER_PARAMS = "inner_params.safetensors"


def _run_task(fn: Callable[..., Any], has_shared: bool, shared: Any, item: Any) -> Any:
    # Ray resolves the top-level ObjectRef argument ``shared`` to its value before the
    # call, reading it from the node's object store instead of re-shipping it per task.
    return fn(shared, item) if has_shared else fn(item)


class RayExecutor:
    """Runs tasks on a Ray cluster: a local one (``ray.init()``) or an existing one (``address``).

    If Ray is already initialised in this process (e.g. by a test fixture or a
    ``ray job submit`` entrypoint), that runtime is used and left running;
    otherwise the first call starts or connects one, and :meth:`close` shuts it down.

    Args:
        address: Cluster address (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.5:6379"``);
            None starts a local Ray on this machine.
        num_cpus_per_task: CPUs Ray reserves per task (a segment fit uses this many threads).
        num_gpus_per_task: GPUs per task (fractions share a GPU, e.g. 0.25 = 4 adapters per GPU).
        max_retries: Extra attempts for a task that raises or whose worker dies.
        workers: Ray Train workers for :meth:`fit_data_parallel` (DDP processes).
        cpus_per_worker: CPUs per Ray Train worker (and its torch threads).
        gpus_per_worker: GPUs per Ray Train worker; > 0 trains on CUDA with nccl.
        storage_path: Where Ray Train keeps the checkpoint; must be reachable from every node
            of a multi-node cluster (NFS path or ``s3://...``). None = a temporary local dir.
        init_kwargs: Extra ``ray.init`` arguments when this executor starts Ray
            (e.g. ``num_cpus``, ``runtime_env``).

    Raises:
        MissingDependencyError: Ray is not installed (``pip install 'segrec[ray]'``).
        ConfigError: A resource or retry setting is out of range.

    Example:
        >>> with RayExecutor(num_cpus_per_task=1) as ex:  # doctest: +SKIP
        ...     ex.map(fit_one, segments, shared=(train, valid))
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus_per_task: float = 1.0,
        num_gpus_per_task: float = 0.0,
        max_retries: int = 1,
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        storage_path: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ):
        checks = (("num_cpus_per_task", num_cpus_per_task, 0), ("max_retries", max_retries, 0),
                  ("num_gpus_per_task", num_gpus_per_task, 0), ("workers", workers, 1),
                  ("cpus_per_worker", cpus_per_worker, 0), ("gpus_per_worker", gpus_per_worker, 0))
        for name, value, low in checks:
            if value < low:
                raise ConfigError(f"RayExecutor: {name} must be >= {low}; got {value}", key=name)
        require("ray", "ray")  # a missing extra is an error here, not at the first task
        self.address = address
        self.num_cpus_per_task = float(num_cpus_per_task)
        self.num_gpus_per_task = float(num_gpus_per_task)
        self.max_retries = int(max_retries)
        self.workers = int(workers)
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = float(gpus_per_worker)
        self.storage_path = storage_path
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    @classmethod
    def from_config(cls, settings: Any) -> RayExecutor:
        """Build from a :class:`segrec.config.RayConfig` (the run file's ``[ray]`` section)."""
        return cls(address=settings.address, num_cpus_per_task=settings.cpus_per_task,
                   num_gpus_per_task=settings.gpus_per_task, max_retries=settings.max_retries,
                   workers=settings.workers, cpus_per_worker=settings.cpus_per_worker,
                   gpus_per_worker=settings.gpus_per_worker, storage_path=settings.storage_path)

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, num_cpus_per_task={self.num_cpus_per_task}, "
                f"num_gpus_per_task={self.num_gpus_per_task}, max_retries={self.max_retries}, "
                f"workers={self.workers})")

    # ------------------------------------------------------------ runtime
    def _ray(self):
        ray = require("ray", "ray")
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, **self.init_kwargs}
            log.info("starting Ray (%s)", self.address or "local")
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, ray.exceptions.RayError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                where = self.address or "RAY_ADDRESS / a new local Ray"
                raise ConfigError(
                    f"could not connect to the Ray cluster at {where}: {first}; check the address "
                    "(head:6379, ray://head:10001 or auto); a cluster with token authentication (the "
                    "default of `ray start` in Ray 2.60) also needs RAY_AUTH_MODE=token and its token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN (docs/ray.md)", key="ray.address") from exc
            self._started = True
        return ray

    def close(self) -> None:
        """Shut Ray down if this executor started it; an external runtime is left alone."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- tasks
    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        shared: Any = _NO_SHARED,
        labels: Sequence[str] | None = None,
        on_error: OnError = "raise",
    ) -> list[Any]:
        """One Ray task per item, ``shared`` put into the object store once; see ``Executor.map``.

        Raises:
            Exception: With ``on_error="raise"``, the first failed task's own exception
                (after all tasks finished); :class:`~segrec.errors.ModelFitError` when its
                worker died or the exception could not be brought back.
        """
        items = list(items)
        names = task_labels(labels, len(items))
        if not items:
            return []
        ray = self._ray()
        has_shared = shared is not _NO_SHARED
        ref = ray.put(shared) if has_shared else None  # once, not per task
        remote = ray.remote(_run_task)
        opts = {"num_cpus": self.num_cpus_per_task, "num_gpus": self.num_gpus_per_task,
                "max_retries": self.max_retries, "retry_exceptions": True}
        start = time.perf_counter()
        refs = [remote.options(name=name, **opts).remote(fn, has_shared, ref, item)
                for item, name in zip(items, names, strict=True)]
        log.info("%d Ray tasks submitted (%s CPU, %s GPU each, %d retries)", len(refs),
                 self.num_cpus_per_task, self.num_gpus_per_task, self.max_retries)
        out: list[Any] = []
        first_error: BaseException | None = None
        attempts = self.max_retries + 1
        for name, task in zip(names, refs, strict=True):
            try:
                out.append(ray.get(task))
            except ray.exceptions.RayTaskError as exc:  # the task itself raised, every attempt
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                out.append(TaskFailure(name, _describe(cause), attempts))
                first_error = first_error or (cause if isinstance(cause, Exception) else exc)
            except ray.exceptions.RayError as exc:  # worker died (os._exit, OOM kill, lost node)
                out.append(TaskFailure(name, _describe(exc).splitlines()[0], attempts, killed=True))
                first_error = first_error or ModelFitError(str(out[-1]))
            if isinstance(out[-1], TaskFailure):
                log.warning("%s", out[-1])
        log.info("%d Ray tasks done in %.1fs", len(refs), time.perf_counter() - start)
        if first_error is not None and on_error == "raise":
            raise first_error
        return out

    # ---------------------------------------------------- data-parallel fit
    def _trainer(self, ray: Any, loop_config: dict[str, Any], storage: str) -> Any:
        """A TorchTrainer running :func:`_train_transformer_worker` on ``workers`` DDP workers."""
        train_mod = require("ray.train", "ray")
        torch_mod = require("ray.train.torch", "ray")
        use_gpu = loop_config["use_gpu"]
        resources = {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if use_gpu else {})}
        if self.storage_path is None and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            log.warning("Ray Train on a multi-node cluster without [ray] storage_path: the checkpoint "
                        "goes to a local temporary directory that other nodes cannot reach; set "
                        "storage_path to a shared path or s3:// URI if the fit fails at the end")
        name = f"segrec-transformer-{uuid.uuid4().hex[:8]}"
        return torch_mod.TorchTrainer(
            _train_transformer_worker,
            train_loop_config=loop_config,
            torch_config=torch_mod.TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=train_mod.ScalingConfig(num_workers=self.workers, use_gpu=use_gpu,
                                                   resources_per_worker=resources),
            run_config=train_mod.RunConfig(name=name, storage_path=storage),
        )

    def fit_data_parallel(self, model: Any, train: Any, *, valid: Any = None, context: Any = None) -> Any:
        """Fit a TransformerRecommender with Ray Train's TorchTrainer on ``workers`` DDP workers.

        Each worker runs ``model``'s own ``fit`` (same network, loop, early stopping
        and refit) on a shard of every batch; see :mod:`segrec.distributed.ddp`.

        Args:
            model: An unfitted :class:`~segrec.models.transformer.TransformerRecommender`.
            train: Fit interactions.
            valid: Optional held-out tail (early stopping), as in ``fit``.
            context: The model's :class:`~segrec.models.FitContext`; its item embeddings
                travel to the workers (its executor and progress callback do not).

        Returns:
            A new fitted TransformerRecommender with ``model``'s config (the argument is
            left unfitted), including ``inner_params_`` for the adapters.

        Raises:
            ConfigError: ``model`` is not a TransformerRecommender.
            ModelFitError: The Ray Train run failed (the message has the workers' error).
        """
        from ..io import load_tensors, read_json

        # the model's own class travels to the workers (no import of segrec.models here: that
        # layer sits above this one); it must declare that it trains data-parallel
        cls = type(model)
        if not model.__recommender_tags__().data_parallel:
            raise ConfigError(f"fit_data_parallel trains a model tagged data_parallel "
                              f"(the TransformerRecommender); got {cls.__name__}")
        embeddings = None if context is None else context.item_embeddings
        # what a worker's fit may use: the item embeddings; the executor, progress and stage log
        # stay on the driver (None without a context: the worker's fit then uses its defaults)
        worker_context = None if context is None else context.with_changes(
            executor=None, progress=None, stages=None, shared={})
        ray = self._ray()
        use_gpu = self.gpus_per_worker > 0
        storage = self.storage_path or tempfile.mkdtemp(prefix="segrec-ray-train-")
        loop_config = {
            "data": ray.put((train, valid, worker_context)),  # once, read by every worker
            "model_class": cls,
            "config": model.config.model_dump(mode="json"),
            "use_gpu": use_gpu,
            "threads": max(1, int(self.cpus_per_worker)),
        }
        trainer = self._trainer(ray, loop_config, storage)
        start = time.perf_counter()
        log.info("Ray Train: %d %s worker(s) fitting the Transformer", self.workers,
                 "GPU" if use_gpu else "CPU")
        try:
            result = trainer.fit()
        except Exception as exc:  # TrainingFailedError wraps the workers' errors
            raise ModelFitError(f"Ray Train fit of the Transformer failed on {self.workers} worker(s): "
                                f"{_describe(exc)}") from exc
        try:
            if result.checkpoint is None:
                raise ModelFitError("Ray Train finished without the rank-0 checkpoint of the Transformer")
            with result.checkpoint.as_directory() as ckpt:
                ckpt = Path(ckpt)
                fitted = cls.load(ckpt)
                inner_file = ckpt / INNER_PARAMS
                inner = load_tensors(inner_file) if inner_file.exists() else None
                extra = read_json(ckpt / "data_parallel.json")
        finally:
            if self.storage_path is None:
                shutil.rmtree(storage, ignore_errors=True)
        return _restore(fitted, model, inner, extra, time.perf_counter() - start, self.workers, embeddings)


def _restore(fitted: Any, model: Any, inner: dict | None, extra: dict[str, Any], seconds: float,
             workers: int, embeddings: Any = None) -> Any:
    """The loaded checkpoint, back on the caller's config/device, with what ``save`` leaves out."""
    import torch

    if fitted.config != model.config:  # workers may have run on another device / thread count
        fitted.config = model.config
        fitted.net_ = fitted.net_.to(model.config.device)
    fitted._item_init = embeddings
    fitted.inner_params_ = None if inner is None else {
        k: torch.from_numpy(v.copy()) for k, v in inner.items()}
    fitted.inner_score_ = extra.get("inner_score")
    fitted.fit_seconds_ = seconds  # wall time of the whole distributed fit, start-up included
    fitted.data_parallel_ = {"workers": workers, **extra}
    return fitted


def _train_transformer_worker(cfg: dict[str, Any]) -> None:
    """Ray Train loop of one worker: the Transformer's own ``fit`` under a DDP hook.

    Runs in every worker process of the TorchTrainer, after Ray Train has set up the
    ``torch.distributed`` process group.
    """
    import ray
    import ray.train
    import ray.train.torch

    from ..io import save_tensors, write_json
    from .ddp import TorchDataParallel

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train, valid, worker_context = ray.get(cfg["data"])
    cls = cfg["model_class"]
    config = cls.Config.model_validate(cfg["config"])
    changes: dict[str, Any] = {}
    device = "cpu"
    if cfg["use_gpu"]:
        device = str(ray.train.torch.get_device())
        changes["device"] = device
    if config.n_threads is None:
        changes["n_threads"] = cfg["threads"]  # Ray reserved this many CPUs for the worker
    model = cls(config.model_copy(update=changes))
    model.data_parallel_hook = TorchDataParallel(device, rank, world)
    start = time.perf_counter()
    model.fit(train, valid=valid, context=worker_context)
    model.data_parallel_hook = None
    # saved with the caller's config: the driver may have no GPU / another thread count
    model.config = config
    metrics = {"rank": rank, "best_epoch": int(model.best_epoch_), "seconds": time.perf_counter() - start}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model.save_into(out)
        if model.inner_params_ is not None:
            save_tensors(out / INNER_PARAMS,
                         {k: v.detach().cpu().numpy() for k, v in model.inner_params_.items()})
        score = getattr(model, "inner_score_", None)
        write_json(out / "data_parallel.json", {"world_size": world, "train_seconds": metrics["seconds"],
                                                "inner_score": None if score is None else float(score)})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

