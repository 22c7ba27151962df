"""The quiet console: native and library output into the job's log file, the workbench's lines on the console."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import logging, os, sys, warnings
log_file = sys.argv[1]
root = logging.getLogger()
root.setLevel(logging.INFO)
root.addHandler(logging.StreamHandler(sys.stdout))
root.addHandler(logging.FileHandler(log_file))
from workbench.console import quiet_console
with quiet_console(int(sys.argv[2])):
    os.write(2, b"I0000 native C++ log line\\n")
    logging.getLogger("tensorflow").info("Assets written to: /tmp/x")
    warnings.warn("converter chatter")
    logging.getLogger("workbench.stages").info("sim top-1: 0.98")
    print("workbench: error: a one-line error", file=sys.stderr)
os.write(2, b"after the block\\n")
"""


def _run(tmp_path, verbosity: int):
    log_file = tmp_path / "workbench.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log_file), str(verbosity)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc, log_file.read_text()


def test_native_and_library_output_goes_to_the_log_file(tmp_path):
    proc, log_file = _run(tmp_path, 1)
    assert proc.stdout.splitlines() == ["sim top-1: 0.98"]
    assert proc.stderr.splitlines() == ["workbench: error: a one-line error", "after the block"]  # fd 2 restored
    for line in ("I0000 native C++ log line", "Assets written to", "converter chatter", "sim top-1: 0.98"):
        assert line in log_file, line


def test_verbosity_two_shows_everything_and_zero_only_warnings(tmp_path):
    proc, _ = _run(tmp_path, 2)
    assert "I0000 native C++ log line" in proc.stderr and "Assets written to" in proc.stdout
    proc, _ = _run(tmp_path, 0)
    assert proc.stdout == "" and "converter chatter" not in proc.stderr


BAR_SCRIPT = """
import io, logging, sys
from tqdm.auto import tqdm
root = logging.getLogger()
root.setLevel(logging.INFO)
root.addHandler(logging.StreamHandler(sys.stdout))
from workbench.console import quiet_console
with quiet_console(1, "job 3"):
    bar = tqdm(total=4, file=sys.stdout, disable=False, ncols=40, mininterval=0)
    bar.update(1)
    logging.getLogger("workbench.stages").info("calibrated")
    bar.update(1)
    bar.close()
logging.getLogger("workbench").info("after")
"""


def test_console_lines_go_through_tqdm_and_carry_the_sweep_jobs_label(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BAR_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.replace("\\r", "\\n").splitlines()
    assert "[job 3] calibrated" in lines  # a line of its own, not glued onto the bar (tqdm.write clears it first)
    assert "after" in lines and "[job 3] after" not in lines  # the handler is restored after the block
