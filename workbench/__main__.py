"""``python -m workbench [+stage=NAME] [overrides]``: the Hydra entry point.

The one place where errors become console lines and exit codes: a value that is not allowed or a
tracking store that cannot be used → one line, exit 2 (before any TensorFlow work); a failure inside a
run → one line, exit 1 (the run is FAILED with its traceback; ``HYDRA_FULL_ERROR=1`` re-raises it);
SIGTERM → the run KILLED, exit 143. In a sweep, a failing job is logged and the sweep goes on.
"""

import logging
import os
import sys

from workbench.console import quiet_environment

quiet_environment()  # before MLflow is imported

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from workbench.config.schema import register_configs  # noqa: E402

register_configs()
log = logging.getLogger("workbench")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _job_label() -> str | None:
    """``job N`` in a sweep (its lines then say which job they come from), else None."""
    from hydra.core.hydra_config import HydraConfig

    return f"job {HydraConfig.get().job.num}" if _in_multirun() else None


def _one_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:500]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from workbench.app import run
    from workbench.config.validate import ConfigError
    from workbench.console import quiet_console
    from workbench.interrupts import Terminated
    from workbench.tracking.probe import TrackingUnavailable

    try:
        with quiet_console(int(cfg.verbosity), _job_label()):
            return run(cfg)
    except Terminated as stop:  # the run is already KILLED
        sys.exit(stop.exit_code)
    except (ConfigError, TrackingUnavailable) as err:
        if _in_multirun():  # the job is recorded FAILED (when the store works); the sweep goes on
            log.error("job failed: %s; the sweep continues", _one_line(err))
            return None
        print(f"workbench: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if _in_multirun():  # the job's run is already FAILED with its traceback; the sweep goes on
            log.exception("job failed; the sweep continues")
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"workbench: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
