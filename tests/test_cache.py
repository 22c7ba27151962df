"""The model cache: verified on load, rebuilt when corrupt, optional when unwritable, shareable."""

import logging
import os
import stat

import keras
import numpy as np

from helpers import small_convnet
from workbench.models.cache import cached_model, weights_digest


def _build(calls):
    def build():
        calls.append(1)
        return small_convnet(), {"note": "x"}

    return build


def test_corrupt_entry_is_rebuilt(tmp_path, caplog):
    calls = []
    model, extra, hit = cached_model(str(tmp_path), "m", {"a": 1}, _build(calls))
    assert not hit and extra == {"note": "x"}
    (path,) = tmp_path.glob("m-*.keras")
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044  # group and others may read a shared cache
    _, _, hit = cached_model(str(tmp_path), "m", {"a": 1}, _build(calls))
    assert hit and len(calls) == 1
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        again, _, hit = cached_model(str(tmp_path), "m", {"a": 1}, _build(calls))
    assert not hit and len(calls) == 2 and "unusable" in caplog.text
    _, _, hit = cached_model(str(tmp_path), "m", {"a": 1}, _build(calls))
    assert hit  # repaired


def test_unwritable_cache_path_is_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        model, _, hit = cached_model(str(blocker / "models"), "m", {"a": 1}, _build([]))
    assert isinstance(model, keras.Model) and not hit and "without the cache" in caplog.text


def test_one_process_builds_an_entry_while_the_others_wait_for_it(tmp_path, caplog):
    import threading
    import time

    calls, hits = [], []

    def slow():
        calls.append(1)
        time.sleep(1.0)  # long enough for the other caller to find no entry yet
        return small_convnet(), {"note": "x"}

    def call():
        hits.append(cached_model(str(tmp_path), "m", {"a": 1}, slow)[2])

    threads = [threading.Thread(target=call) for _ in range(2)]
    with caplog.at_level(logging.INFO, logger="workbench.models.cache"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(calls) == 1 and sorted(hits) == [False, True]  # built once; the waiting caller loaded it
    assert "waiting for another process that is building m-" in caplog.text  # the wait is said, not silent


def test_digest_is_the_same_for_a_trained_and_a_reloaded_model(tmp_path):
    model = small_convnet()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 4)), verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert weights_digest(model) == weights_digest(reloaded)
    other = small_convnet(seed=1)
    assert weights_digest(other) != weights_digest(reloaded)
