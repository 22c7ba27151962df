"""SIGTERM / Ctrl-C: raised at checkpoints, never inside TensorFlow; every run still reaches a final state."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from helpers import small_convnet
from workbench import interrupts
from workbench.evaluation.accuracy import predict_classes
from workbench.interrupts import Terminated


@pytest.fixture
def handlers():
    """The workbench's handlers in this process for one test; the previous ones and a clean state after."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    interrupts.install()
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)
    interrupts.reset()


def _signal(sig=signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)


def test_the_first_signal_waits_for_the_next_checkpoint(handlers):
    _signal()  # no exception here, wherever the main thread is
    with pytest.raises(Terminated) as stop:
        interrupts.checkpoint()
    assert stop.value.exit_code == 143
    interrupts.install()  # the next job of a sequential sweep: still signalled
    with pytest.raises(Terminated):
        interrupts.checkpoint()
    interrupts.reset()
    interrupts.checkpoint()
    _signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stop:
        interrupts.checkpoint()
    assert not isinstance(stop.value, Terminated)


def test_a_second_signal_raises_at_once_except_inside_held(handlers):
    _signal()
    with pytest.raises(Terminated):
        _signal()
    done = False
    with pytest.raises(Terminated):
        with interrupts.held():
            _signal()
            done = True  # the block goes on to its end
    assert done


def test_evaluation_stops_at_the_next_batch(handlers):
    model = small_convnet()
    seen = []
    images = tf.data.Dataset.from_tensor_slices((np.zeros((8, 8, 8, 3), np.float32), np.zeros(8, np.int32))).batch(2)

    def counted(x, y):
        seen.append(1)
        return x, y

    _signal()
    with pytest.raises(Terminated):
        predict_classes(model, images.map(lambda x, y: tf.py_function(counted, [x, y], [tf.float32, tf.int32])))
    assert len(seen) <= 2  # stopped at the first batch (tf.data may have prefetched one more)


@pytest.mark.slow  # an MLflow store
@pytest.mark.parametrize("method", ["create_run", "log_batch", "set_terminated"])
def test_a_run_signalled_while_it_starts_or_ends_reaches_a_final_state(tmp_path, monkeypatch, handlers, method):
    from workbench.tracking.mlflow_run import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    original = getattr(tracker.client, method)

    def twice_signalled(*args, **kwargs):  # a first signal and a repeated one, inside the store write
        _signal()
        _signal()
        return original(*args, **kwargs)

    monkeypatch.setattr(tracker.client, method, twice_signalled)
    with pytest.raises(Terminated):
        with tracker.run("job", {}, {"k": "v"}) as tracked:
            tracked.log_metrics({"sim/top1": 0.5})
    monkeypatch.undo()
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    # cut while starting: KILLED with its params; cut while writing FINISHED: that write completes
    assert run.info.status == ("FINISHED" if method == "set_terminated" else "KILLED")
    assert run.data.params == {"k": "v"}


@pytest.mark.slow  # an MLflow store
def test_no_run_starts_after_a_signal_and_one_finishing_after_it_is_killed(tmp_path, handlers):
    from workbench.tracking.mlflow_run import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    with pytest.raises(Terminated):
        with tracker.run("job", {}, {}):
            _signal()  # the work ends without a checkpoint: the run is KILLED, not FINISHED
    with pytest.raises(Terminated):
        with tracker.run("next", {}, {}):
            pytest.fail("a run started after SIGTERM")
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.run_name == "job" and run.info.status == "KILLED"
