"""What the MLflow UI shows a new user: a small sweep, the UI on its store, the summary's link in Chromium.

Runs ``python -m workbench -m +stage=baseline,cle quant.param_bw=4,8`` on the embedded default (its
shipped weights, 200 validation digits) into a throwaway outputs folder, starts ``mlflow ui`` on that store,
opens the link the closing summary prints (the experiment's runs table in the workbench's shared view) in
headless Chromium with a fresh profile, and writes the screenshot to ``docs/img/mlflow_runs_table.png``.

    python bench/ui_screenshot.py [--chromium chromium] [--port 5077]

Needs Chromium (Debian: ``apt-get install chromium``); nothing else leaves the machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "mlflow_runs_table.png"
SWEEP = ["+stage=baseline,cle", "quant.param_bw=4,8", "dataset.eval_samples=200", "quant.calibration_samples=200"]


def _wait_for(port: int, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow ui did not answer on port {port} within {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--port", type=int, default=5077)
    args = parser.parse_args(argv)
    if shutil.which(args.chromium) is None:
        print(f"ui_screenshot: {args.chromium} not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp) / "outputs"
        cmd = [sys.executable, "-m", "workbench", "-m", *SWEEP, f"paths.outputs_dir={outputs}"]
        print("$", " ".join(["python", "-m", "workbench", "-m", *SWEEP]), flush=True)
        summary = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        link = re.search(r"then: (http://\S+)", summary)
        if link is None:
            print("ui_screenshot: the closing summary printed no UI link", file=sys.stderr)
            return 1
        url = link.group(1).replace("127.0.0.1:5000", f"127.0.0.1:{args.port}")
        store = f"sqlite:///{outputs / 'mlflow.db'}"
        ui = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--port", str(args.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(args.port)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            shot = [
                args.chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={Path(tmp) / 'profile'}",  # a fresh profile: what a first visit shows
                "--window-size=1920,1000",
                "--virtual-time-budget=25000",
                f"--screenshot={OUT}",
                url,
            ]
            subprocess.run(shot, capture_output=True, check=True, timeout=180)
        finally:
            ui.terminate()
            ui.wait(timeout=30)
    print(f"opened {url}\nwrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
