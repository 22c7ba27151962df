"""``python -m workbench.weights retrain|check [MODEL ...]``: the embedded models' shipped weights.

``retrain`` trains each embedded model (default: both) from scratch at its shipped settings, on one TensorFlow
thread with op determinism, and writes ``workbench/models/weights/<model>.weights.h5`` and the manifest (spec,
SHA-256, weights digest, the machine it ran on). ``check`` trains the same way and compares the digest with the
manifest's: equal on the CPU and TensorFlow the manifest names; elsewhere float sums may round differently,
which is why the weights ship instead of being trained on first use.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from workbench.console import quiet_environment

MODELS = ("mnist_mobilenet", "mnist_mobilenet_v2")


def _retrained(model: str, store: bool) -> str:
    """Train ``model`` at its shipped settings; returns its weights' digest."""
    from hydra import compose, initialize_config_dir

    from workbench.__main__ import CONF_DIR
    from workbench.config.validate import validate
    from workbench.models.shipped import TRAINING_THREADS, store_shipped, values_digest
    from workbench.registry import stage_names
    from workbench.stages.setup import build_data, built_model
    from workbench.threads import configure_threads, seed_everything

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = validate(compose("config", overrides=[f"model={model}"]), stage_names())
    configure_threads(TRAINING_THREADS)
    seed_everything(config.seed, deterministic=True)
    data = build_data(config)

    def keep(name: str, spec: dict, trained) -> None:
        if store:
            store_shipped(name, spec, trained)

    with tempfile.TemporaryDirectory() as cache:
        return values_digest(built_model(config, data, cache_dir=cache, on_trained=keep))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.weights", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("retrain", "check"))
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"{', '.join(MODELS)} (default: both)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"MODEL is one of {', '.join(MODELS)}, not {', '.join(unknown)}")
    quiet_environment()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    from workbench.config.schema import register_configs
    from workbench.models.shipped import machine, manifest

    register_configs()
    failed = 0
    for model in args.models or MODELS:
        digest = _retrained(model, store=args.command == "retrain")
        if args.command == "retrain":
            print(f"{model}: trained, digest {digest}, written to workbench/models/weights/")
            continue
        entry = manifest().get(model, {})
        same = entry.get("trained") == machine()
        verdict = "matches" if digest == entry.get("digest") else "differs from"
        failed += verdict != "matches"
        where = "" if same else f" (the manifest's weights were trained on {entry.get('trained')}, this is {machine()})"
        print(f"{model}: retrained digest {digest} {verdict} the shipped {entry.get('digest')}{where}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
