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


def _retrained(model: str, store: bool) -> tuple[str, dict]:
    """Train ``model`` at its shipped settings; returns (weights digest, the spec it was trained with)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from workbench.__main__ import CONF_DIR
    from workbench.models.embedded import BuildContext
    from workbench.models.shipped import TRAINING_THREADS, store_shipped, values_digest
    from workbench.stages.setup import _instantiate, build_data
    from workbench.threads import configure_threads, seed_everything

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}"])
    configure_threads(TRAINING_THREADS)
    seed_everything(int(cfg.seed), deterministic=True)
    data = build_data(cfg)
    trained: dict = {}

    def keep(name: str, spec: dict, built) -> None:
        trained.update(name=name, spec=spec, digest=values_digest(built))
        if store:
            store_shipped(name, spec, built)

    dataset = OmegaConf.to_container(cfg.dataset, resolve=True, enum_to_str=True)
    with tempfile.TemporaryDirectory() as cache:
        context = BuildContext(data=data, cache_dir=cache, seed=int(cfg.seed), dataset=dataset, use_shipped=False, on_trained=keep)
        _instantiate(cfg.model, _partial_=True, _convert_="all")(context=context)
    return trained["digest"], trained["spec"]


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
        digest, _ = _retrained(model, store=args.command == "retrain")
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
