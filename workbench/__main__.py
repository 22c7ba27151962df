"""``python -m workbench +stage=NAME [overrides]``: the Hydra entry point."""

import hydra
from omegaconf import DictConfig

from workbench.config.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from workbench.app import run

    return run(cfg)


if __name__ == "__main__":
    main()
