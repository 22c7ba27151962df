"""Runs left RUNNING by a process that is gone (killed with -9, machine lost) are ended FAILED.

Every run carries the ``host``, ``pid`` and process start time (``pid.start``) it executes in. On that host, a RUNNING run whose process no
longer exists cannot finish any more: it is marked FAILED with a note. Runs of other hosts are only
listed (their processes cannot be checked from here); runs without a pid predate the tags.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from workbench import keys


@dataclass
class RepairedRun:
    run_id: str
    experiment: str
    action: str  # "marked FAILED", "alive", "other host", "no pid"


START_TOLERANCE_S = 1.0  # the recorded start time is rounded to 0.01 s; a reused pid starts later by far more


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether ``pid`` runs on this host and is the process that started at ``started`` (a reused pid, pid_max
    being 32768 here, is another process; a zombie, ended but not yet reaped, is gone)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > START_TOLERANCE_S:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def _state_of(tags: dict[str, str], host: str) -> str:
    pid = tags.get(keys.TAG_PID)
    if pid is None:
        return "no pid"
    if tags.get(keys.TAG_HOST) != host:
        return "other host"
    started = tags.get(keys.TAG_PID_START)
    return "alive" if process_alive(int(pid), float(started) if started else None) else "gone"


def end_if_gone(client: MlflowClient, run, status: str, by: str, dry_run: bool = False) -> str:
    """End ``run`` (RUNNING) with ``status`` when its process on this host is gone; what was done."""
    host = socket.gethostname()
    state = _state_of(run.data.tags, host)
    if state != "gone":
        return state
    if not dry_run:
        note = f"process {run.data.tags[keys.TAG_PID]} on {host} ended without ending this run; marked {status} by {by}"
        client.set_tag(run.info.run_id, keys.TAG_REPAIRED, note)
        client.set_terminated(run.info.run_id, status)
    return f"marked {status}"


def repair_runs(client: MlflowClient, dry_run: bool = False) -> list[RepairedRun]:
    """End FAILED every RUNNING run of this host whose process is gone; report what was found."""
    out = []
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=50000)
        for run in runs:
            action = end_if_gone(client, run, "FAILED", "`python -m workbench.runs repair`", dry_run)
            out.append(RepairedRun(run.info.run_id, exp.name, action))
    return out
