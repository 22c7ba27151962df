"""``python -m workbench.runs repair``: end FAILED the RUNNING runs whose process is gone."""

from __future__ import annotations

import argparse
import sys

from workbench.tracking.mlflow_run import open_client, resolve_tracking_uri
from workbench.tracking.probe import TrackingUnavailable
from workbench.tracking.repair import repair_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.runs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    repair = sub.add_parser("repair", help="mark RUNNING runs of dead processes on this host FAILED")
    repair.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db")
    repair.add_argument("--outputs-dir", default="outputs")
    repair.add_argument("--dry-run", action="store_true", help="only list what would be done")
    args = parser.parse_args(argv)
    try:
        client = open_client(resolve_tracking_uri(args.tracking_uri, args.outputs_dir))
    except TrackingUnavailable as err:
        print(f"workbench.runs: {err}", file=sys.stderr)
        return 2
    found = repair_runs(client, args.dry_run)
    for r in found:
        print(f"{r.experiment}\t{r.run_id}\t{r.action}" + (" (dry run)" if args.dry_run and r.action == "marked FAILED" else ""))
    fixed = sum(r.action == "marked FAILED" for r in found)
    print(f"{len(found)} RUNNING run(s) found, {fixed} {'would be ' if args.dry_run else ''}marked FAILED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
