"""progress: epoch events reach listeners; the heartbeat line carries epoch, loss, NDCG and time left."""

import io
import time

from segrec import progress


def test_listeners_hear_reports_only_inside_the_block():
    heard = []
    with progress.listening(heard.append):
        progress.report({"epoch": 1})
    progress.report({"epoch": 2})
    assert heard == [{"epoch": 1}]


def test_a_failing_listener_does_not_break_the_work():
    def broken(event):
        raise RuntimeError("watcher bug")

    with progress.listening(broken):
        progress.report({"epoch": 1})  # no exception


def test_heartbeat_line_and_thread():
    out = io.StringIO()
    beat = progress.Heartbeat(out, time.perf_counter(), interval=0.01)
    beat.stage("fitting transformer")
    beat({"label": "transformer", "epoch": 0, "epochs": 10})
    beat({"label": "transformer", "epoch": 2, "epochs": 10, "loss": 5.25, "ndcg@10": 0.125})
    line = beat.line()
    for part in ("still fitting transformer", "epoch 2/10 done", "loss 5.2500", "valid NDCG@10 0.1250",
                 "left (8 epochs"):
        assert part in line, line
    with beat:
        deadline = time.monotonic() + 10
        while "still fitting" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "still fitting transformer" in out.getvalue()


def test_the_training_loop_reports_its_epochs():
    import numpy as np

    from segrec.models.transformer import TransformerRecommender
    from segrec.testing import random_interactions

    heard = []
    with progress.listening(heard.append):
        TransformerRecommender(epochs=2, max_len=10, embedding_size=8, early_stopping=False,
                               refit=False).fit(random_interactions())
    epochs = [e["epoch"] for e in heard if e.get("label") == "transformer"]
    assert epochs[:1] == [0] and max(epochs) >= 1 and np.isfinite(heard[-1]["loss"])
