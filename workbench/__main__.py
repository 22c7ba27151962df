"""``python -m workbench [+stage=NAME] [overrides]``: the Hydra entry point."""

import logging

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
    from workbench.app import run

    try:
        return run(cfg)
    except Exception:
        if not _in_multirun():
            raise
        # the job's run is already FAILED with its traceback; the sweep goes on and still ends cleanly
        log.exception("job failed; the sweep continues")
        return None


if __name__ == "__main__":
    main()
