"""What a fit may use besides its data: one frozen :class:`FitContext` (as LensKit's ``TrainingOptions``).

Every ``Recommender.fit(train, *, valid=None, context=None)`` takes the same
object, so extra inputs never travel through ``**kwargs`` or ``set_*`` side
doors: the segment of every user, item embeddings for a text-initialised
Transformer, the executor for per-segment work, the torch device, models
already fitted on the same data (the adapters start from the global
Transformer), and where to report progress and stage timings.

Example:
    >>> import numpy as np
    >>> ctx = FitContext(segments=np.array([0, 1, 1]))
    >>> ctx.with_changes(device="cuda").device
    'cuda'
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..stages import Stage, StageLog

if TYPE_CHECKING:  # typing only: the executor layer does not depend on models
    from ..distributed.executor import Executor

__all__ = ["FitContext"]


@dataclass(frozen=True, eq=False)
class FitContext:
    """Run context of one fit; every field is optional and read only by models that declare it.

    Attributes:
        segments: int array (n_users,), segment per dense user of the fit data
            (-1 = none); read by models tagged ``requires_segments``.
        segment_probs: float array (n_users, K), each user's posterior over the segments
            where the segmenter has one (a GMM), else None; read by the joint model's
            soft segments.
        item_embeddings: float array (n_items, any) in dense item order; read by
            models tagged ``uses_item_embeddings``.
        executor: Runs per-segment tasks (and data-parallel training when it offers
            ``fit_data_parallel``); None = one after another in this process.
        device: Torch device for this fit, overriding the config's ``device`` of
            models that have one (and recorded there, so they score where they trained).
        shared: Saved model name -> a model already fitted on the same data, e.g.
            ``{"transformer": fitted}`` for the adapters (``builds_on``).
        progress: Called with a short message before each long step.
        stages: Where a composite records the wall time, CPU time and peak memory of
            each part of its fit (:mod:`segrec.stages`); None = not recorded.
        keep_inner: The caller will want the model's version fitted on the inner train part
            (:meth:`~segrec.models.base.Recommender.inner_model`): a grid search keeps its
            winner instead of dropping it. Set by a composite for its members only, so the
            sub-models a member fits for itself (per-segment models) keep nothing.
    """

    segments: np.ndarray | None = None
    segment_probs: np.ndarray | None = None
    item_embeddings: np.ndarray | None = None
    executor: Executor | None = None
    device: str | None = None
    shared: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    stages: StageLog | None = None
    keep_inner: bool = False

    def __post_init__(self) -> None:
        # read-only views: a context handed to several fits must not change between them
        object.__setattr__(self, "shared", MappingProxyType(dict(self.shared)))
        if self.segments is not None:
            segs = np.asarray(self.segments, dtype=np.int64)
            segs.flags.writeable = False
            object.__setattr__(self, "segments", segs)
        if self.segment_probs is not None:
            probs = np.asarray(self.segment_probs, dtype=np.float32)
            probs.flags.writeable = False
            object.__setattr__(self, "segment_probs", probs)

    def with_changes(self, **changes: Any) -> FitContext:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def say(self, message: str) -> None:
        """Report progress (a no-op without a ``progress`` callback)."""
        if self.progress is not None:
            self.progress(message)

    @contextlib.contextmanager
    def stage(self, name: str, **detail: Any) -> Iterator[Stage]:
        """Time the body as stage ``name`` in ``stages`` (an unrecorded :class:`Stage` without one)."""
        if self.stages is None:
            yield Stage(name, detail=dict(detail))
            return
        with self.stages.stage(name, **detail) as row:
            yield row
