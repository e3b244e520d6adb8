import mmap
import time
from pathlib import Path

import numpy as np
import pytest

from segrec.stages import StageLog, peak_rss_mb


def test_stage_records_wall_cpu_and_detail():
    log = StageLog()
    with log.stage("busy", rows=3) as row:
        t = time.process_time()
        while time.process_time() - t < 0.05:  # burn CPU (not wall time: the machine may be loaded)
            pass
        row.detail["tuning_s"] = 0.01
    (stage,) = log.stages
    # CPU time (all threads) is what the loop burned; wall time can be less with other threads busy
    assert stage.name == "busy" and stage.seconds > 0 and stage.cpu_seconds >= 0.05
    rec = log.to_records()[0]
    assert rec["stage"] == "busy" and rec["rows"] == 3 and rec["tuning_s"] == 0.01
    assert log.seconds("busy") == stage.seconds and log.seconds("absent") == 0.0
    text = log.format()
    assert text.splitlines()[0].startswith("stage") and "busy" in text and "tuning_s" in text


def test_peak_memory_is_per_stage_and_covers_children():
    log = StageLog()
    with log.stage("outer"):
        with log.stage("big"):
            # 40 MB of fresh anonymous pages, touched: np.ones here could reuse memory the
            # allocator already holds resident (after a torch fit earlier in the same pytest
            # process it did, and RSS did not move), which is not what this test is about
            block = mmap.mmap(-1, 40_000_000)
            np.frombuffer(block, np.uint8)[::4096] = 1
            block.close()
        with log.stage("small"):
            pass
    outer, big, small = log.stages
    assert big.peak_rss_mb >= small.peak_rss_mb
    assert outer.peak_rss_mb >= big.peak_rss_mb  # a parent holds at least what its children held
    if log.peak_is_per_stage:  # Linux with a writable /proc/self/clear_refs: per-stage peaks
        assert big.peak_rss_mb - small.peak_rss_mb > 30
    # the kernel's mark covers only the last stage now; the run's peak is still the largest stage's
    assert log.peak_mb() >= max(s.peak_rss_mb for s in log.stages) and peak_rss_mb() > 0
    assert "peak resident memory of the run" in log.format()


def test_a_failing_stage_is_still_recorded():
    log = StageLog()
    try:
        with log.stage("boom"):
            raise ValueError("x")
    except ValueError:
        pass
    assert [s.name for s in log.stages] == ["boom"] and log.stages[0].seconds >= 0


def test_trim_heap_returns_freed_heap_memory_where_glibc_has_it():
    from segrec.resources import trim_heap

    # 100 KB blocks come from the heap (below glibc's 128 KB mmap threshold); freeing every
    # other one leaves ~300 MB of holes that plain free() cannot hand back
    blocks = [np.ones(12_500, np.float64) for _ in range(6_000)]
    keep = blocks[1::2]
    del blocks
    before = _rss_mb()
    if not trim_heap():
        pytest.skip("no glibc malloc_trim on this platform (e.g. macOS, musl)")
    assert _rss_mb() < before - 200
    del keep


def _rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
