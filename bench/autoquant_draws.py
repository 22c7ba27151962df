"""AutoQuant over several draws of its search and held-out images: how much of the held-out figure is the draw.

    python bench/autoquant_draws.py [--model mnist_mobilenet_v2] [--param-bw 4] [--drop 0.01] [--draws 10] [--write]

One sweep, ``python -m workbench -m +stage=autoquant model=M quant.param_bw=W autoquant.split_seed=0,...,N-1
threads=1`` (two jobs at a time, a fresh outputs folder; draw 0 is the default run's, whose seed is 0): the same
model, the same validation images, only the seeded division into search and held-out images changes. Per draw:
the choice, its drop against FP32 on the search images it was chosen on, on the held-out images it is judged on
(exact McNemar p against FP32 there) and on the whole split (both parts); whether the held-out drop is within the
allowed drop. Then over the draws: the mean of each drop and how many draws meet the target on the held-out
images. The draws share their validation images, so they are not independent samples: the spread shows what one
draw of this size can say, not an interval.

``--write`` puts the table into README's AutoQuant section.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import markdown_table, rewrite_block  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_mobilenet_v2")
    parser.add_argument("--param-bw", type=int, default=4)
    parser.add_argument("--drop", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    overrides = [
        "+stage=autoquant",
        f"model={args.model}",
        f"quant.param_bw={args.param_bw}",
        f"autoquant.allowed_accuracy_drop={args.drop}",
        f"autoquant.split_seed={','.join(str(i) for i in range(args.draws))}",
        "threads=1",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "workbench", "-m", *overrides, f"paths.outputs_dir={tmp}", f"hydra.sweep.dir={tmp}/multirun"]
        cmd += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "verbosity=0"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{proc.stderr[-3000:]}")
        minutes = (time.perf_counter() - start) / 60
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id], "tags.stage = 'autoquant'")
    rows, held_drops, search_drops, whole_drops = [], [], [], []
    for run in sorted(runs, key=lambda r: int(r.data.tags["autoquant.split_seed"])):
        m, t = run.data.metrics, run.data.tags
        n_held, n_search = m["eval/samples"], m["autoquant/search_samples"]
        fp32_whole = (m["fp32/top1"] * n_held + m["autoquant/fp32_search_top1"] * n_search) / (n_held + n_search)
        search, held, whole = (
            m["autoquant/fp32_search_top1"] - m["autoquant/search_top1"],
            m["fp32/top1"] - m["sim/top1"],
            fp32_whole - m["autoquant/recipe_top1"],
        )
        search_drops.append(search)
        held_drops.append(held)
        whole_drops.append(whole)
        rows.append(
            {
                "split seed": t["autoquant.split_seed"],
                "choice": t["autoquant.choice"],
                "search drop (pt)": f"{100 * search:.1f}",
                "held-out drop (pt)": f"{100 * held:.1f}",
                "p vs FP32 (held-out)": f"{m['autoquant/p_value_vs_fp32']:.2g}",
                "whole-split drop (pt)": f"{100 * whole:.1f}",
                "held-out within target": "yes" if m["autoquant/held_out_met"] else "no",
            }
        )
    if len(rows) != args.draws:
        raise SystemExit(f"expected {args.draws} autoquant runs, found {len(rows)}")

    def mean(values: list[float]) -> float:
        return 100 * sum(values) / len(values)

    met = sum(r["held-out within target"] == "yes" for r in rows)
    summary = (
        f"Over the {args.draws} draws: mean drop {mean(search_drops):.1f} pt on the search images, "
        f"{mean(held_drops):.1f} pt on the held-out images (from {100 * min(held_drops):.1f} to {100 * max(held_drops):.1f}), "
        f"{mean(whole_drops):.1f} pt on the whole split; the held-out drop is within the allowed {100 * args.drop:.1f} pt "
        f"in {met} of {args.draws} draws."
    )
    table = markdown_table(rows)
    print(table + "\n\n" + summary)
    if args.write:
        command = (
            f"python bench/autoquant_draws.py --model {args.model} --param-bw {args.param_bw} --drop {args.drop} "
            f"--draws {args.draws} --write"
        )
        text = (
            f"`{command}` on {time.strftime('%Y-%m-%d')} ({minutes:.1f} min; CPU, {os.cpu_count()} cores, two jobs at a time of one "
            f"thread each): `{args.model}` W{args.param_bw}A8 per-tensor, `+stage=autoquant` with `autoquant.split_seed` "
            f"0 to {args.draws - 1}; drops against FP32 on the same images, in points.\n\n{table}\n\n{summary}"
        )
        rewrite_block(ROOT / "README.md", "autoquant-draws", text)


if __name__ == "__main__":
    main()
