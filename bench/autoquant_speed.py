"""AutoQuant's cost and answer: ``+stage=autoquant`` next to our own cle, bc, adaround and mixed_precision stages
run one after another, at the same setting, side by side in one invocation.

Each side runs in fresh processes with its own outputs folder (no transform cache shared between the sides; the
embedded model loads its shipped weights on both). Prints each side's wall time, their ratio (issue 24: AutoQuant
should take no longer), what AutoQuant chose, its held-out top-1 against FP32 on the same held-out images, and
its search figure beside it.

    python bench/autoquant_speed.py [--model mnist_mobilenet_v2] [--param-bw 4] [--drop 0.01] [--write]

``--write`` puts the figures into README's Performance section.
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

from doc_blocks import rewrite_block  # noqa: E402


def _workbench(outputs: str, *overrides: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORKBENCH_PARENT_RUN_ID")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", *overrides, f"paths.outputs_dir={outputs}", "verbosity=0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_mobilenet_v2")
    parser.add_argument("--param-bw", type=int, default=4)
    parser.add_argument("--drop", type=float, default=0.01)
    parser.add_argument("--write", action="store_true", help="write the figures into README.md")
    args = parser.parse_args()
    setting = [f"model={args.model}", f"quant.param_bw={args.param_bw}"]
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        stages_dir, auto_dir = os.path.join(tmp, "stages"), os.path.join(tmp, "autoquant")
        stages = {name: _workbench(stages_dir, f"+stage={name}", *setting) for name in ("cle", "bc", "adaround", "mixed_precision")}
        auto = _workbench(auto_dir, "+stage=autoquant", *setting, f"autoquant.allowed_accuracy_drop={args.drop}")
        client = MlflowClient(f"sqlite:///{auto_dir}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("workbench").experiment_id], "tags.stage = 'autoquant'")
    m, tags = run.data.metrics, run.data.tags
    separate = sum(stages.values())
    lines = [
        f"{args.model} W{args.param_bw}A8, allowed drop {100 * args.drop:.1f} pt",
        "  " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items()) + f": {separate:.0f} s one after another",
        f"  autoquant {auto:.0f} s ({m['autoquant/trials']:.0f} trials): {auto / separate:.2f}x the four stages",
        f"  chose {tags['autoquant.choice']} ({tags['autoquant.stopped']})",
        f"  held-out ({m['eval/samples']:.0f} images): sim {100 * m['sim/top1']:.1f} % [{100 * m['sim/top1_ci_low']:.1f}, "
        f"{100 * m['sim/top1_ci_high']:.1f}] vs FP32 {100 * m['fp32/top1']:.1f} % ({100 * (m['sim/top1'] - m['fp32/top1']):+.1f} pt); "
        f"McNemar against FP32 p={m['autoquant/p_value_vs_fp32']:.2g}; search images: {100 * m['autoquant/search_top1']:.1f} %",
        f"  vs the deployable baseline on the held-out images {100 * m['autoquant/delta_vs_baseline']:+.1f} pt "
        f"(McNemar p={m['autoquant/p_value']:.2g}, {tags['autoquant.verdict']})",
    ]
    print("\n".join(lines))
    if args.write:
        command = f"python bench/autoquant_speed.py --model {args.model} --param-bw {args.param_bw} --drop {args.drop} --write"
        text = (
            f"`{command}` on {time.strftime('%Y-%m-%d')} (each side in fresh processes with its own outputs folder, one "
            f"after the other; CPU, {os.cpu_count()} cores; target: AutoQuant ≤ 1× the four stages):\n\n```\n" + "\n".join(lines) + "\n```"
        )
        rewrite_block(ROOT / "README.md", "autoquant-speed", text)


if __name__ == "__main__":
    main()
