"""``python -m workbench [+stage=NAME] [overrides]``: the Hydra entry point."""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from workbench.config.schema import register_configs

register_configs()
log = logging.getLogger("workbench")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from workbench.app import Terminated, run
    from workbench.config.validate import ConfigError

    try:
        return run(cfg)
    except Terminated as stop:  # the run is already KILLED
        sys.exit(stop.exit_code)
    except Exception as err:
        if not _in_multirun():
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # the run is FAILED with the whole traceback in its traceback.txt; the console gets one line
            first = (str(err).strip().splitlines() or [""])[0][:500]
            print(f"workbench: error: {first}", file=sys.stderr)
            sys.exit(1)
        # the job's run is already FAILED with its traceback; the sweep goes on and still ends cleanly
        if isinstance(err, ConfigError):
            log.error("job failed: %s; the sweep continues", err)
        else:
            log.exception("job failed; the sweep continues")
        return None


if __name__ == "__main__":
    main()
