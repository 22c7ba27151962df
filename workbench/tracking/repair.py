"""Runs left RUNNING by a process that is gone (killed with -9, machine lost) are ended FAILED.

Every run carries the ``host`` and ``pid`` it executes in. On that host, a RUNNING run whose process no
longer exists cannot finish any more: it is marked FAILED with a note. Runs of other hosts are only
listed (their processes cannot be checked from here); runs without a pid predate the tags.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from workbench import keys


@dataclass
class RepairedRun:
    run_id: str
    experiment: str
    action: str  # "marked FAILED", "alive", "other host", "no pid"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def repair_runs(client: MlflowClient, dry_run: bool = False) -> list[RepairedRun]:
    """End FAILED every RUNNING run of this host whose process is gone; report what was found."""
    host = socket.gethostname()
    out = []
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=50000)
        for run in runs:
            tags = run.data.tags
            pid = tags.get(keys.TAG_PID)
            if pid is None:
                action = "no pid"
            elif tags.get(keys.TAG_HOST) != host:
                action = "other host"
            elif process_alive(int(pid)):
                action = "alive"
            else:
                action = "marked FAILED"
                if not dry_run:
                    note = f"process {pid} on {host} ended without ending this run; marked FAILED by `python -m workbench.runs repair`"
                    client.set_tag(run.info.run_id, keys.TAG_REPAIRED, note)
                    client.set_terminated(run.info.run_id, "FAILED")
            out.append(RepairedRun(run.info.run_id, exp.name, action))
    return out
