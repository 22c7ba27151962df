"""``python -m workbench [+stage=NAME] [overrides]``: the Hydra entry point.

The one place where errors become console lines and exit codes: a value that is not allowed or a
tracking store that cannot be used → one line, exit 2 (before any TensorFlow work); a failure inside a
run → one line, exit 1 (the run is FAILED with its traceback; ``HYDRA_FULL_ERROR=1`` re-raises it);
SIGTERM → the run KILLED, exit 143. In a sweep, a failing job is logged and the sweep goes on.
"""

import difflib
import itertools
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


CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
HYDRA_NOISE = ("reference_type", "object_type", "Set the environment variable", "provider=", "To append to your config", "Config search")


def hydra_error_line(err: BaseException) -> str:
    """Hydra's composition error (and its cause) as one line: a wrong type, a choice that does not exist, a misspelt key."""
    text = "\n".join(str(e) for e in (err, err.__cause__) if e is not None)
    if "Available options in" in text:
        head = text.strip().splitlines()[0].split(": ", 1)[-1]  # Could not find 'stage/nonexistent'
        group = text.split("Available options in '", 1)[1].split("'", 1)[0]
        options = list(itertools.takewhile(lambda o: o.startswith("\t"), text.split("Available options in", 1)[1].splitlines()[1:]))
        options = [o.strip() for o in options]  # the tab-indented options, up to the search path
        allowed = ", ".join(o for o in options if o and not o.startswith("base_"))
        return f"{head}: {group} is one of {allowed}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(HYDRA_NOISE)]
    return " — ".join(dict.fromkeys(lines))[:500]


def check_overrides(argv: list[str]) -> None:
    """Compose the config once before Hydra does, so that Hydra's own errors are one line and exit 2 like ours
    (Hydra prints several lines and exits 1). Runs with flags (-m, --help, --cfg, …) or hydra's own overrides
    are left to Hydra."""
    if any(a.startswith("-") or a.startswith(("hydra.", "hydra/", "+hydra", "~hydra")) for a in argv):
        given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("paths.outputs_dir=")]
        if given and "," not in given[-1] and "${" not in given[-1]:  # a sweep: Hydra makes its folder below it first
            check_outputs_dir(given[-1])
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=argv)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        print(f"workbench: error: {hydra_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    check_outputs_dir(str(cfg.paths.outputs_dir))
    for override in argv:  # Hydra's hint for a misspelt key, +key=value, would run with the typo ignored
        key = override[1:].split("=", 1)[0]
        if override.startswith("+") and not override.startswith("++") and key not in APPENDABLE and not key.startswith(APPENDABLE_PREFIXES):
            known = [k for k in _keys(cfg) if k != key]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f": did you mean {close[0]}={override.split('=', 1)[-1]}?" if close else ": no setting reads it"
            print(f"workbench: error: {override} adds a key that is not a setting{hint}", file=sys.stderr)
            sys.exit(2)


def check_outputs_dir(path: str) -> None:
    """``paths.outputs_dir`` can be made and written, or one line and exit 2 (Hydra's own run-folder creation
    would print a pathlib traceback)."""
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        print(f"workbench: error: paths.outputs_dir={path} cannot be used: {why}; give a folder you can write", file=sys.stderr)
        sys.exit(2)


APPENDABLE = ("stage", "sweep")  # +stage=NAME, +sweep=NAME: groups absent from the defaults list
APPENDABLE_PREFIXES = ("model.custom_objects.",)  # free-form maps


def _keys(cfg, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    out = []
    for k in cfg.keys() if isinstance(cfg, DictConfig) else ():
        value = cfg._get_node(k)
        out += _keys(value, f"{prefix}{k}.") if isinstance(value, DictConfig) else [f"{prefix}{k}"]
    return out


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
