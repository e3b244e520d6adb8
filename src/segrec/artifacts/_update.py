"""Appending known users' new interactions to a saved run without a refit (``segrec update``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SegrecError
from ..io import atomic_dir, write_json
from ._load import load_run
from ._manifest import MANIFEST, _file_table
from ._save import _discard_previous_run, check_out


@dataclass(frozen=True)
class RunUpdate:
    """What :func:`update_run` did: events applied, users whose vectors were recomputed, where it wrote."""

    path: Path
    events: int
    users: int
    systems: list[str]


def update_run(path: str | Path, events: str | Path, *, out: str | Path | None = None,
               schema: Any = None) -> RunUpdate:
    """Append new interactions of known users to a saved run; recompute what a request reads from them.

    Every saved system gets the events through :meth:`Recommender.add_interactions`: the
    users' seen items (excluded), the Transformer's sequences, the item-item rows, and the
    cached vectors of exactly these users (the Transformer's hidden state after their new
    last item; ALS folded in). Nothing is relearned: weights, segments and routing stay
    as fitted, and ``results.json`` keeps the fit's evaluation (refit with ``segrec run``
    to relearn). The new run is written atomically (to ``out``, default in place: the
    old run stays complete until the new one is), with a fresh manifest that records
    the update; a running server picks it up on SIGHUP or ``POST /v1/admin/reload``.

    Args:
        path: The run directory (verified against its manifest first).
        events: Interactions file (``user_id,item_id[,timestamp]``, as ``segrec run`` reads),
            validated like any input; rows are applied in (user, time) order.
        out: Where to write the updated run (default: ``path``).
        schema: Column mapping of the events file (:class:`segrec.data.schema.Schema`).

    Raises:
        DataValidationError: The events file is malformed, or names a user or item the run
            does not know (new users are served from their recent items; new items need a refit).
    """
    import shutil
    import time as _time

    from .. import route  # noqa: F401 - registers the composite's model class for loading
    from ..data import load_interactions
    from ..errors import DataValidationError
    path = Path(path)
    run = load_run(path)
    target = Path(out) if out is not None else path
    if target != path:
        check_out(target, overwrite=True, flag="--out")
    data = load_interactions(events, schema=schema)
    user_col = schema.user if schema is not None else "user_id"
    item_col = schema.item if schema is not None else "item_id"
    systems = {name: run.system(name) for name in run.system_names}
    first = next(iter(systems.values()))
    users = first.user_vocab_.index(data.user_vocab.ids[data.users])
    items = first.item_vocab_.index(data.item_vocab.ids[data.items])
    for ids, idx, column, what in ((data.user_vocab.ids[data.users], users, user_col,
                                    "user; new users are served from their recent_items at request time, "
                                    "or refit with `segrec run`"),
                                   (data.item_vocab.ids[data.items], items, item_col,
                                    "item; a new item needs a refit (segrec run)")):
        if (idx < 0).any():
            bad = str(ids[np.flatnonzero(idx < 0)[0]])
            line = _line_of(events, column, bad)
            at = f" (line {line})" if line else ""
            raise DataValidationError(f"{events}: column {column}{at}: {bad!r} is not a known {what}",
                                      source=str(events), column=column, problem="unknown id")
    for model in systems.values():
        if model.user_vocab_ != first.user_vocab_ or model.item_vocab_ != first.item_vocab_:
            raise SegrecError(f"{path}: its systems index users or items differently; refit the run")
    for model in systems.values():
        model.add_interactions(users, items)
        model.prepare_serving()  # every cached vector is in the artifact, the touched ones recomputed
    listed = sorted(run.files - {MANIFEST}) if run.files is not None else []
    with atomic_dir(target, discard=_discard_previous_run) as tmp:
        for rel in listed:
            if rel.startswith("systems/"):
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / rel, dest)  # verified by load_run; copied as bytes
        (tmp / "systems").mkdir()
        for name, model in systems.items():
            (tmp / "systems" / name).mkdir()
            model.save_into(tmp / "systems" / name)
        manifest = dict(run.manifest)
        manifest["updates"] = [*list(manifest.get("updates") or []), {
            "at": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()), "events": int(len(data)),
            "users": int(len(np.unique(users))), "source": str(events), "fingerprint": data.fingerprint()}]
        manifest["files"] = _file_table(tmp)
        write_json(tmp / MANIFEST, manifest)
    return RunUpdate(target, int(len(data)), int(len(np.unique(users))), list(systems))


def _line_of(source: Any, column: str, value: str) -> int | None:
    """The first line of a CSV file where ``column`` holds ``value`` (best effort, for messages)."""
    try:
        table = pd.read_csv(source, usecols=[column], dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - Parquet, a renamed column...: the message goes without a line
        return None
    hits = np.flatnonzero(table[column].str.strip().to_numpy() == value)
    return int(hits[0]) + 2 if len(hits) else None  # line 1 is the header
