"""Run artifacts: save a finished run, verify its checksums, load it back for serving.

A run directory holds ``results.json``, ``manifest.json`` (versions, data
fingerprint, sha256 of every file), ``segments.parquet``, ``systems/<name>/`` (the
``segmented`` composite is one artifact with its tiers and segmenter inside),
``items.parquet``, ``segmenter/`` (the run's fitted segmentation pipeline, which
places new users for every saved system) and the HTML report. Everything is written
atomically (:func:`segrec.io.atomic_dir`) and nothing is pickled; :func:`update_run`
(``segrec update``) appends known users' new interactions to a saved run without a
refit. The server and ``segrec recommend`` import only this module (and what it
loads), never the experiment runner.
"""

from ._load import LoadedRun, load_run
from ._manifest import MANIFEST, verify_run
from ._save import check_out, save_run
from ._update import RunUpdate, update_run

__all__ = ["MANIFEST", "LoadedRun", "RunUpdate", "check_out", "load_run", "save_run", "update_run",
           "verify_run"]
