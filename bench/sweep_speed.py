"""Sweep wall time by how many jobs run at once: sequential, joblib with 2 and 4 jobs.

The same 6-job sweep of the embedded default (``+stage=baseline quant.param_bw=4,6,8
quant.output_bw=8,16``), each in a fresh outputs folder that holds the trained model's cache (so no job
trains), run as a user runs it, one after the other in this process; each joblib sweep twice: with the
thread pools sized to cores / jobs (the default) and with TensorFlow's own pools in every job
(``threads=0``: one pool per core per process, what the workbench did before). Every variant runs
``--repeats`` times, the variants alternated so that drift hits all alike; prints the median wall time,
the range, and the ratio of medians to the sequential sweep. ``--write`` puts the table into README's
Performance section.

    python bench/sweep_speed.py [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from doc_blocks import markdown_table, rewrite_block  # noqa: E402

SWEEP = ["+stage=baseline", "quant.param_bw=4,6,8", "quant.output_bw=8,16"]
VARIANTS = [
    ("sequential (basic launcher)", []),
    ("joblib, 2 jobs", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
    ("joblib, 2 jobs, TensorFlow's default pools", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=0"]),
    ("joblib, 4 jobs", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"]),
    ("joblib, 4 jobs, TensorFlow's default pools", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "threads=0"]),
]


def run_sweep(extra: list[str], cache: Path) -> float:
    with tempfile.TemporaryDirectory() as outputs:
        shutil.copytree(cache, Path(outputs) / "cache" / "models")
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "workbench", "-m", *SWEEP, *extra, f"paths.outputs_dir={outputs}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep {extra} failed: {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs-dir", default=str(ROOT / "outputs"), help="where the trained embedded model is cached")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    cache = Path(args.outputs_dir) / "cache" / "models"
    if not any(cache.glob("mnist_mobilenet-*.keras")):
        raise SystemExit(f"no cached embedded model under {cache}: run `python -m workbench +stage=baseline` once first")
    times: dict[str, list[float]] = {label: [] for label, _ in VARIANTS}
    for _ in range(args.repeats):
        for label, extra in VARIANTS:
            times[label].append(run_sweep(extra, cache))
            print(label, f"{times[label][-1]:.0f} s", flush=True)
    sequential = statistics.median(times[VARIANTS[0][0]])
    rows = [
        {
            "launcher": label,
            "6 jobs (s), median": f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})",
            "vs sequential": f"{statistics.median(v) / sequential:.2f}×",
        }
        for label, v in times.items()
    ]
    text = (
        f"`python bench/sweep_speed.py --repeats {args.repeats} --write` on {time.strftime('%Y-%m-%d')} (CPU, {os.cpu_count()} cores; "
        f"`python -m workbench -m {' '.join(SWEEP)}` on the embedded default, model cached):\n\n{markdown_table(rows)}"
    )
    print(text)
    if args.write:
        rewrite_block(ROOT / "README.md", "sweep-speed", text)


if __name__ == "__main__":
    main()
