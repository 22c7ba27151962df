"""From the composed config to typed objects: quant settings, data, model, stage context."""

from __future__ import annotations

import logging
import os

import keras
from omegaconf import DictConfig, OmegaConf

from workbench.data.images import ImageData
from workbench.graph.functional import FunctionalGraph
from workbench.options import QuantSettings
from workbench.stages.context import StageContext

log = logging.getLogger(__name__)


def quant_settings(cfg: DictConfig) -> QuantSettings:
    q = cfg.quant
    return QuantSettings(
        scheme=q.scheme,
        param_scheme=q.param_scheme,
        output_scheme=q.output_scheme,
        param_bw=q.param_bw,
        output_bw=q.output_bw,
        per_channel=q.per_channel,
        param_symmetric=q.param_symmetric,
        output_symmetric=q.output_symmetric,
        strict_symmetric=q.strict_symmetric,
        unsigned_symmetric=q.unsigned_symmetric,
        rounding=q.rounding,
        percentile=float(q.percentile),
        seed=int(cfg.seed),
    )


def build_data(cfg: DictConfig) -> ImageData:
    d = cfg.dataset
    if d.name == "mnist":
        from workbench.data.mnist import load_mnist

        return load_mnist(d.val_size, cfg.seed, d.batch_size, d.eval_samples)
    if d.name == "synthetic":
        from workbench.data.synthetic import make_synthetic

        return make_synthetic(d.num_train, d.num_val, d.num_classes, list(d.image_shape), d.noise, cfg.seed, d.batch_size, d.eval_samples)
    if d.name == "imagenet":
        from workbench.data.imagenet import load_imagenet

        return load_imagenet(
            d.path, d.train_pattern, d.valid_pattern, d.image_size, d.resize_size, d.channel_order == "bgr",
            d.label_offset, d.num_classes, list(d.mean), list(d.std), d.batch_size, d.eval_samples, d.shuffle_buffer,
        )
    raise ValueError(f"dataset.name={d.name!r} is not allowed; allowed: mnist, synthetic, imagenet")


def _embedded_model(cfg: DictConfig, data: ImageData) -> keras.Model:
    """An embedded model trained on first use on the chosen dataset, cached by its config."""
    from workbench.models.cache import cached_model
    from workbench.models.mnist_mobilenet import build_mnist_mobilenet
    from workbench.models.training import train_classifier
    from workbench.models.zoo import build_mnist_mobilenet_v2

    m = cfg.model
    spec = {
        "model": OmegaConf.to_container(m, resolve=True),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "num_classes": data.num_classes,
        "seed": cfg.seed,
        "keras": keras.__version__,
    }
    spec["dataset"].pop("eval_samples", None)
    spec["dataset"].pop("batch_size", None)

    def train() -> tuple[keras.Model, dict]:
        log.info("training %s on %s for %d epochs (first use; cached afterwards)", m.name, cfg.dataset.name, m.epochs)
        if m.name == "mnist_mobilenet":
            model = build_mnist_mobilenet(list(m.input_shape), data.num_classes, m.width, m.bn_momentum)
        else:
            model = build_mnist_mobilenet_v2(list(m.input_shape), data.num_classes, m.alpha, m.bn_momentum)
        trained = train_classifier(model, data.for_model(m.input_shape), m.epochs, m.batch_size, m.learning_rate, m.augment, cfg.seed)
        return trained, {}

    model, _, _ = cached_model(os.path.join(cfg.paths.cache_dir, "models"), m.name, spec, train)
    return model


EMBEDDED_MODELS = ("mnist_mobilenet", "mnist_mobilenet_v2")


def build_model(cfg: DictConfig, data: ImageData) -> keras.Model:
    m = cfg.model
    if m.name in EMBEDDED_MODELS:
        return _embedded_model(cfg, data)
    if m.name in ("mobilenet_v2", "resnet50"):
        from workbench.models.zoo import keras_application

        return keras_application(m.name, list(m.input_shape), m.num_classes, m.weights)
    if m.name == "keras_file":
        from workbench.models.zoo import load_keras_file

        return load_keras_file(m.path, OmegaConf.to_container(m.custom_objects))
    raise ValueError(f"model.name={m.name!r} is not allowed; allowed: {', '.join(EMBEDDED_MODELS)}, mobilenet_v2, resnet50, keras_file")


def check_pairing(model: keras.Model, data: ImageData) -> dict[str, str]:
    """Whether ``data`` can feed ``model``: a one-line error if not, else notes (tags) on what is adapted."""
    FunctionalGraph.from_model(model)  # a subclassed model is refused here, in one line
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise ValueError(f"the model's input shape {shape} is not an image batch (N, H, W, C): the workbench quantizes image classifiers")
    sample = next(iter(data.val_batches(limit=1)))[0]
    h, w, c = (int(v) for v in sample.shape[1:])
    notes = {}
    if shape[3] is not None and c != shape[3]:
        if c != 1:
            raise ValueError(f"the model takes {shape[3]}-channel images but the dataset gives {c}-channel images")
        notes["data.adapted"] = f"1-channel images repeated to {shape[3]} channels"
    if shape[1:3] != (None, None) and (h, w) != tuple(shape[1:3]):
        notes["data.resized"] = f"{h}x{w} resized to {shape[1]}x{shape[2]}"
    outputs = model.output_shape[-1]
    if outputs != data.num_classes:
        notes["data.class_mismatch"] = f"the model has {outputs} outputs, the dataset {data.num_classes} classes"
    for key, note in notes.items():
        log.warning("%s: %s", key, note)
    return notes


def build_context(cfg: DictConfig, model: keras.Model, data: ImageData) -> StageContext:
    return StageContext(
        model=model,
        data=data.for_model(model.input_shape[1:]),
        settings=quant_settings(cfg),
        calibration_samples=cfg.quant.calibration_samples,
        sqnr_samples=cfg.tracking.sqnr_samples,
        seed=cfg.seed,
        cache_dir=cfg.paths.cache_dir,
        options={
            "baseline": OmegaConf.to_container(cfg.baseline, resolve=True),
            "cle": OmegaConf.to_container(cfg.cle, resolve=True, enum_to_str=True),
            "bc": OmegaConf.to_container(cfg.bc, resolve=True, enum_to_str=True),
            "qat": OmegaConf.to_container(cfg.qat, resolve=True, enum_to_str=True),
            "export_dir": os.path.join(cfg.paths.outputs_dir, "exports"),
        },
    )
