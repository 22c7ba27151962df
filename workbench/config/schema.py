"""Structured-config schemas for every Hydra group, registered in the ConfigStore.

YAML files under ``conf/`` extend these nodes, so a wrong type or an unknown enum value
fails at compose time with OmegaConf's message naming the key and the allowed values.
Range and file checks that a type cannot express: each dataset and model type's own ``problems`` (cheap
probes, no TensorFlow), run by :mod:`workbench.config.validate` with the cross-group checks.
"""

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from workbench.config.help import CONF_DIR, help_template
from workbench.config.probes import KERAS_SUFFIXES, keras_archive_problem, keras_file_problem, positive, tfrecord_problem
from workbench.options import AdaroundParameters, BiasCorrectionMode, QuantScheme, QuantSettings, ReLU6Mode, Rounding, Target
from workbench.paths import safe_component
from workbench.registry import stage_names


def _missing(node, key: str) -> bool:
    return OmegaConf.is_missing(node, key)


class ChannelOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


@dataclass
class PathsConfig:
    outputs_dir: str = "outputs"
    cache_dir: str = "${paths.outputs_dir}/cache"
    reports_dir: str = "${paths.outputs_dir}/reports"


@dataclass
class QuantConfig:
    # The YAML-facing twin of workbench.options.QuantSettings (which is frozen, so OmegaConf could not
    # merge overrides into it); stages.setup.quant_settings maps one to the other, a test keeps them in step.
    # defaults are QuantSettings' own (written once, in workbench/options.py)
    # scheme sets both analyzers; param_scheme / output_scheme override it for weights / activations
    scheme: QuantScheme = QuantSettings.scheme
    param_scheme: QuantScheme = "${quant.scheme}"  # type: ignore[assignment]
    output_scheme: QuantScheme = "${quant.scheme}"  # type: ignore[assignment]
    param_bw: int = QuantSettings.param_bw
    output_bw: int = QuantSettings.output_bw
    per_channel: bool = QuantSettings.per_channel
    param_symmetric: bool = QuantSettings.param_symmetric
    output_symmetric: bool = QuantSettings.output_symmetric
    strict_symmetric: bool = QuantSettings.strict_symmetric
    unsigned_symmetric: bool = QuantSettings.unsigned_symmetric
    rounding: Rounding = QuantSettings.rounding
    percentile: float = QuantSettings.percentile
    # aimet: AIMET's default config; tflite: what the TFLite int8 runtime computes (conf/quant/tflite.yaml)
    target: Target = QuantSettings.target
    # a YAML/JSON file: {layer name or regex: {param_bw, output_bw, enabled}}, first match wins
    overrides: Optional[str] = None
    calibration_samples: int = 1000


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<paths.outputs_dir>/mlflow.db
    uri: Optional[str] = None
    experiment: str = "workbench"
    # null: <paths.outputs_dir>/mlartifacts (only used when the experiment is created)
    artifact_location: Optional[str] = None
    sqnr_samples: int = 256


@dataclass
class DatasetConfig:
    # the builder Hydra's instantiate calls with every key below and the run's seed (docs/extending.md)
    _target_: str = MISSING
    name: str = MISSING
    batch_size: int = 64
    # null: evaluate on the whole validation split
    eval_samples: Optional[int] = None
    channels: ClassVar[Optional[int]] = None  # of the images it yields (None: the type cannot say)

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        """One line for each value of node ``d`` that cannot be used (ranges, files), before TensorFlow."""
        for message in (positive(d.batch_size, "dataset.batch_size"), positive(d.eval_samples, "dataset.eval_samples", allow_none=True)):
            if message:
                yield message

    @classmethod
    def image_channels(cls, d) -> Optional[int]:
        return cls.channels


@dataclass
class MnistDatasetConfig(DatasetConfig):
    _target_: str = "workbench.data.mnist.load_mnist"
    name: str = "mnist"
    val_size: int = 1000
    channels: ClassVar[Optional[int]] = 1

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        yield from super().problems(d)
        if not (isinstance(d.val_size, int) and 1 <= d.val_size <= 4999):
            yield f"dataset.val_size={d.val_size!r} is not allowed: use an integer in 1..4999"


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    _target_: str = "workbench.data.synthetic.make_synthetic"
    name: str = "synthetic"
    num_train: int = 512
    num_val: int = 256
    num_classes: int = 10
    image_shape: List[int] = field(default_factory=lambda: [28, 28, 1])
    noise: float = 0.5

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        yield from super().problems(d)
        for key in ("num_train", "num_val"):
            message = positive(d[key], f"dataset.{key}")
            if message:
                yield message
        if d.num_classes < 2:
            yield f"dataset.num_classes={d.num_classes!r} is not allowed: use an integer >= 2"
        if len(d.image_shape) != 3 or any(v < 1 for v in d.image_shape):
            yield f"dataset.image_shape={list(d.image_shape)!r} is not allowed: use [H, W, C]"

    @classmethod
    def image_channels(cls, d) -> Optional[int]:
        return int(d.image_shape[-1])


@dataclass
class ImageFilesConfig(DatasetConfig):
    # image files under dataset.path, with the evaluation transform: shorter side to resize_size, centre
    # crop image_size, channel_order, per-channel mean/std in 0..255 units, in the output channel order
    batch_size: int = 32
    path: str = MISSING
    image_size: int = 224
    resize_size: int = 256
    channel_order: ChannelOrder = ChannelOrder.rgb
    mean: List[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: List[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    channels: ClassVar[Optional[int]] = 3

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        yield from super().problems(d)
        image, resize = d.image_size, d.resize_size
        if not ((image is None or image >= 1) and (resize is None or resize >= (image or 1))):
            yield f"dataset.image_size={image} / dataset.resize_size={resize} are not allowed: need resize_size >= image_size >= 1"
        if len(d.mean) != 3 or len(d.std) != 3 or any(v <= 0 for v in d.std):
            yield "dataset.mean and dataset.std must be 3 values each, std > 0"


@dataclass
class ImagenetDatasetConfig(ImageFilesConfig):
    _target_: str = "workbench.data.imagenet.load_imagenet"
    name: str = "imagenet"
    train_pattern: str = "train*"
    valid_pattern: str = "valid*"
    label_offset: int = 1
    num_classes: int = 1000
    shuffle_buffer: int = 2048

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        yield from super().problems(d)
        if _missing(d, "path"):
            yield "dataset.path is missing: give the folder that holds the train*/valid* TFRecord files"
            return
        if not os.path.isdir(d.path):
            yield f"dataset.path={d.path!r} is not a folder"
            return
        valid = sorted(glob.glob(os.path.join(d.path, d.valid_pattern)))
        if not valid:
            yield f"dataset.path={d.path!r} has no files matching dataset.valid_pattern={d.valid_pattern!r}"
            return
        for first in (valid[0], *sorted(glob.glob(os.path.join(d.path, d.train_pattern)))[:1]):
            problem = tfrecord_problem(first)
            if problem:
                yield f"dataset.path: {first} {problem}"


@dataclass
class ImageFolderDatasetConfig(ImageFilesConfig):
    # a folder of class subfolders of JPEG/PNG/BMP images (Keras' image_dataset_from_directory layout)
    _target_: str = "workbench.data.image_folder.load_image_folder"
    name: str = "image_folder"
    # null: the model's input size (resize_size: image_size · 256/224, ImageNet's ratio), so images are not
    # cropped at 224 and then resized again to a small model's input
    image_size: Optional[int] = None  # type: ignore[assignment]
    resize_size: Optional[int] = None  # type: ignore[assignment]
    # a separate folder with the same class subfolders; null: the last validation_split of path's
    # images after a shuffle with the run's seed
    validation_path: Optional[str] = None
    validation_split: float = 0.2
    # an empty class folder is an error (it would be a class with no images) unless this is true: then skipped
    allow_empty_classes: bool = False

    @classmethod
    def problems(cls, d) -> Iterator[str]:
        if _missing(d, "path"):
            yield "dataset.path is missing: give a folder with one subfolder of images per class"
            return
        for key in ("path", "validation_path"):
            folder = d.get(key)
            if folder is not None and not os.path.isdir(folder):
                yield f"dataset.{key}={folder!r} is not a folder"
        if d.validation_path is None and not 0.0 < d.validation_split < 1.0:
            yield f"dataset.validation_split={d.validation_split!r} is not allowed: a fraction in (0, 1), or give dataset.validation_path"
        yield from super().problems(d)


@dataclass
class ModelConfig:
    # the builder Hydra's instantiate calls with every key below and a BuildContext (docs/extending.md)
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class EmbeddedModelConfig(ModelConfig):
    # trained on first use on the chosen dataset, cached under paths.cache_dir keyed by this config
    num_classes: int = 10
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.003
    bn_momentum: float = 0.9
    augment: bool = True

    @classmethod
    def problems(cls, m) -> Iterator[str]:
        for message in (positive(m.epochs, "model.epochs", allow_zero=True), positive(m.batch_size, "model.batch_size")):
            if message:
                yield message
        if m.learning_rate <= 0:
            yield f"model.learning_rate={m.learning_rate!r} is not allowed: use a value > 0"
        if not 0.0 <= m.bn_momentum < 1.0:
            yield f"model.bn_momentum={m.bn_momentum!r} is not allowed: use a value in [0, 1)"


@dataclass
class MnistMobilenetConfig(EmbeddedModelConfig):
    _target_: str = "workbench.models.embedded.mnist_mobilenet"
    name: str = "mnist_mobilenet"
    input_shape: List[int] = field(default_factory=lambda: [28, 28, 1])
    width: int = 16
    epochs: int = 20

    @classmethod
    def problems(cls, m) -> Iterator[str]:
        yield from super().problems(m)
        message = positive(m.width, "model.width")
        if message:
            yield message


@dataclass
class MnistMobilenetV2Config(EmbeddedModelConfig):
    # keras.applications.MobileNetV2 (random init) on the digits resized to 32×32×3
    _target_: str = "workbench.models.embedded.mnist_mobilenet_v2"
    name: str = "mnist_mobilenet_v2"
    input_shape: List[int] = field(default_factory=lambda: [32, 32, 3])
    alpha: float = 0.35

    @classmethod
    def problems(cls, m) -> Iterator[str]:
        yield from super().problems(m)
        if m.alpha <= 0:
            yield f"model.alpha={m.alpha!r} is not allowed: use a value > 0 (e.g. 0.35)"


@dataclass
class KerasAppConfig(ModelConfig):
    _target_: str = "workbench.models.embedded.application"
    input_shape: List[int] = field(default_factory=lambda: [224, 224, 3])
    num_classes: int = 1000
    # null: random initialisation; else a local weights file (never downloaded)
    weights: Optional[str] = None

    @classmethod
    def problems(cls, m) -> Iterator[str]:
        if m.weights is not None and not os.path.isfile(m.weights):
            yield f"model.weights={m.weights!r} does not exist: give a local file or null (weights are never downloaded)"
        if len(m.input_shape) != 3:
            yield f"model.input_shape={list(m.input_shape)!r} is not allowed: use [H, W, C]"


@dataclass
class KerasFileConfig(ModelConfig):
    _target_: str = "workbench.models.embedded.keras_file"
    name: str = "keras_file"
    path: str = MISSING
    # custom layer classes the file needs: class name -> "package.module:Name"
    custom_objects: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def problems(cls, m) -> Iterator[str]:
        if _missing(m, "path"):
            yield "model.path is missing: give a local .keras or .h5 file"
            return
        if not str(m.path).endswith(KERAS_SUFFIXES):
            yield f"model.path={m.path!r} is not allowed: use a .keras or .h5 file"
        elif not os.path.isfile(m.path):
            yield f"model.path={m.path!r} does not exist"
        else:
            problem = keras_file_problem(m.path)
            if problem is None and m.path.endswith(".keras"):
                problem = keras_archive_problem(m.path, m.get("custom_objects") or {})
            if problem:
                yield f"model.path={m.path!r} {problem}"


@dataclass
class BaselineConfig:
    # true: quantize the BN-folded model, as an int8 runtime runs it (the deployable baseline);
    # false: quantize the unfolded kernels with BN kept in float (not deployable, for comparison only)
    fold_batch_norms: bool = True


@dataclass
class CLEConfig:
    # ReLU6 between scaled layers: clip (exact per-channel clip), relu (AIMET TF), break_chain (end the chain)
    relu6_mode: ReLU6Mode = ReLU6Mode.clip
    high_bias_absorption: bool = True


@dataclass
class BiasCorrectionConfig:
    # empirical (data), analytical (data-free; layers without a BN pattern stay as they are),
    # auto (analytical where possible, else empirical)
    mode: BiasCorrectionMode = BiasCorrectionMode.auto
    num_quant_samples: int = 512
    num_bias_correct_samples: int = 512
    batch_size: int = 64
    # layer names left untouched
    ignore: List[str] = field(default_factory=list)


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


@dataclass
class QATConfig:
    epochs: int = 2
    learning_rate: float = 1e-4
    # the learning rate halves every decay_steps optimizer steps
    decay_steps: int = 1000
    batch_size: int = 64
    optimizer: Optimizer = Optimizer.adam
    # learn quantizer min/max with the weights (range-learning variant of quant.scheme)
    learn_ranges: bool = True
    # run bias correction (bc.*) between CLE and QAT
    bias_correction: bool = False
    # convert the result to a fully integer TFLite model and measure tflite/top1
    export_tflite: bool = True


@dataclass
class AdaroundConfig:
    # AIMET's names (adaround.*): num_batches batches of batch_size calibration samples are cached, each
    # of num_iterations per layer uses one; λ (default_reg_param), β from/to (default_beta_range) after a
    # warm start of default_warm_start of the iterations; Adam at learning_rate. The default iteration count
    # is chosen by measurement: python bench/adaround_speed.py
    num_batches: int = AdaroundParameters.num_batches
    num_iterations: int = AdaroundParameters.num_iterations
    default_reg_param: float = AdaroundParameters.default_reg_param
    default_beta_range: List[float] = field(default_factory=lambda: list(AdaroundParameters.default_beta_range))
    default_warm_start: float = AdaroundParameters.default_warm_start
    learning_rate: float = AdaroundParameters.learning_rate
    batch_size: int = AdaroundParameters.batch_size
    # each layer's input from the model whose earlier layers are already rounded (AIMET's default) or FP32
    quantized_input: bool = AdaroundParameters.quantized_input
    # the steps before AdaRound: BN fold, then cross-layer equalization (cle needs the fold)
    fold_batch_norms: bool = True
    cle: bool = True
    # convert the result to a fully integer TFLite model and measure tflite/top1 (8-bit weights only)
    export_tflite: bool = True


@dataclass
class AnalyzeConfig:
    # validation images every per-layer configuration is evaluated on (6 evaluations per quantized layer)
    eval_samples: int = 500
    # BN fold always; cross-layer equalization first (analyze.cle=false: fold only)
    cle: bool = True
    # how many of the most harmful layers the run description and the histogram figure name
    top_k: int = 5


@dataclass
class AmpConfig:
    # candidate [weight bits, activation bits] per quantizer group (a layer's weights and output)
    candidates: List[List[int]] = field(default_factory=lambda: [[8, 8], [4, 8]])
    # the cheapest configuration whose top-1 is within this of FP32 (0.01 = 1 point) on the eval subset
    allowed_accuracy_drop: float = 0.01
    # validation images the search evaluates on (the chosen configuration is then evaluated on all)
    eval_samples: int = 500
    # BN fold always; cross-layer equalization first (amp.cle=false: fold only)
    cle: bool = True
    # the lower weight candidates are AdaRounded (adaround.* options) rather than rounded to nearest
    adaround: bool = True


@dataclass
class ExportConfig:
    # the exporting stages (qat, adaround) log their model as an MLflow model (Keras flavor, with the int8
    # TFLite file and encodings beside it); a name here also registers it in the Model Registry
    register_as: Optional[str] = None


@dataclass
class PipelineConfig:
    # the stages `python -m workbench` runs (no +stage), each a child run of one parent run; bn_fold is
    # left out: the deployable baseline already quantizes the folded model (bn_fold adds its diagnostics)
    # names from the stage registry (workbench.registry), checked when the run starts
    stages: List[str] = field(default_factory=lambda: ["baseline", "cle", "bc", "qat"])


@dataclass
class StageConfig:
    name: str = MISSING  # a name of the stage registry (workbench.registry)


@dataclass
class EvalConfig:
    """Which output of a multi-output model is the classifier that top-1 reads; the other outputs are still
    quantized and reported by output SQNR. null: the model's only output, or the only one of ``num_classes``."""

    output: Optional[str] = None
    # a model whose class count differs from the dataset's is refused (its top-1 means nothing) unless this is true
    allow_class_mismatch: bool = False


@dataclass
class Config:
    model: Any = MISSING
    dataset: Any = MISSING
    quant: QuantConfig = field(default_factory=QuantConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cle: CLEConfig = field(default_factory=CLEConfig)
    bc: BiasCorrectionConfig = field(default_factory=BiasCorrectionConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    adaround: AdaroundConfig = field(default_factory=AdaroundConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    # absent unless +stage=NAME is given
    stage: Optional[StageConfig] = None
    seed: int = 0
    deterministic: bool = True
    # 0: warnings and the closing summary; 1: progress lines (default); 2: TensorFlow's own logs too
    verbosity: int = 1
    # TensorFlow's thread pools per job; null: cores / jobs running at once (joblib n_jobs, Ray num_cpus),
    # TensorFlow's default when a job has the machine to itself; 0: TensorFlow's default always
    threads: Optional[int] = None


def register_configs() -> None:
    """Register the schemas (YAML options name them in their defaults lists) and our resolvers: ``wb.safe`` makes
    one folder name of a string (a sweep job's overrides), ``wb.pid`` the process id (two sweeps started in the
    same second get their own folders)."""
    OmegaConf.register_new_resolver("wb.safe", safe_component, replace=True)
    OmegaConf.register_new_resolver("wb.pid", os.getpid, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="hydra/help", name="workbench", node={"app_name": "workbench", "header": "", "footer": "", "template": help_template()})
    cs.store(group="quant", name="base_quant", node=QuantConfig)
    cs.store(group="tracking", name="base_tracking", node=TrackingConfig)
    cs.store(group="paths", name="base_paths", node=PathsConfig)
    cs.store(group="dataset", name="base_mnist", node=MnistDatasetConfig)
    cs.store(group="dataset", name="base_synthetic", node=SyntheticDatasetConfig)
    cs.store(group="dataset", name="base_imagenet", node=ImagenetDatasetConfig)
    cs.store(group="dataset", name="base_image_folder", node=ImageFolderDatasetConfig)
    cs.store(group="model", name="base_mnist_mobilenet", node=MnistMobilenetConfig)
    cs.store(group="model", name="base_mnist_mobilenet_v2", node=MnistMobilenetV2Config)
    cs.store(group="model", name="base_keras_app", node=KerasAppConfig)
    cs.store(group="model", name="base_keras_file", node=KerasFileConfig)
    for name in stage_names():  # a plug-in stage without its YAML file: +stage=NAME still selects it
        if not (CONF_DIR / "stage" / f"{name}.yaml").exists():
            cs.store(group="stage", name=name, node={"stage": {"name": name}}, package="_global_")
