"""The configuration's types: one dataclass per node, registered in the ConfigStore, and the only form the
configuration takes after start-up (``config.validate`` converts the composed config once, in ``app.run``).

YAML files under ``conf/`` extend these nodes, so a wrong type or an unknown enum value fails at compose time
with OmegaConf's message naming the key and the allowed values. The option types are the library's own
(``quant`` is :class:`~workbench.options.QuantSettings`, ``adaround`` extends
:class:`~workbench.options.AdaroundParameters`); each checks its own fields in ``__post_init__``. Dataset and
model types add ``problems()``: cheap probes of their files (no TensorFlow), run with the cross-group checks.
"""

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from workbench.config.help import CONF_DIR, help_template
from workbench.config.probes import (
    KERAS_SUFFIXES,
    keras_archive_problem,
    keras_file_problem,
    keras_input_shape,
    module_problem,
    npz_array_shape,
    npz_problem,
    tfrecord_problem,
)
from workbench.options import (
    MAX_BITWIDTH,
    MIN_BITWIDTH,
    AdaroundParameters,
    BiasCorrectionMode,
    QuantSettings,
    ReLU6Mode,
    check,
    load_overrides,
    positive,
)
from workbench.paths import safe_component
from workbench.registry import stage_names, stages

REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,255}")  # what every MLflow store accepts as a model name


class ChannelOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


@dataclass
class PathsConfig:
    outputs_dir: str = "outputs"
    cache_dir: str = "${paths.outputs_dir}/cache"
    reports_dir: str = "${paths.outputs_dir}/reports"


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<paths.outputs_dir>/mlflow.db
    uri: Optional[str] = None
    experiment: str = "workbench"
    # null: <paths.outputs_dir>/mlartifacts (only used when the experiment is created)
    artifact_location: Optional[str] = None
    sqnr_samples: int = 256

    def __post_init__(self) -> None:
        check(positive(self.sqnr_samples, "sqnr_samples", allow_zero=True))
        if not self.experiment:
            raise ValueError("experiment must be a non-empty name")


@dataclass
class DatasetConfig:
    # the builder Hydra's instantiate calls with every key below and the run's seed (docs/extending.md)
    _target_: str = MISSING
    name: str = MISSING
    batch_size: int = 64
    # null: evaluate on the whole validation split
    eval_samples: Optional[int] = None
    # what to give for a required key that is missing (``path: ???``), by key
    hints: ClassVar[Dict[str, str]] = {}

    def problems(self) -> Iterator[str]:
        """One line for each value that cannot be used (ranges, files: cheap probes), before TensorFlow."""
        for message in (
            positive(self.batch_size, "dataset.batch_size"),
            positive(self.eval_samples, "dataset.eval_samples", allow_none=True),
        ):
            if message:
                yield message

    def sample_shape(self) -> Optional[tuple]:
        """The shape of one input it yields (no batch axis; None where a size follows the model, or the whole
        shape when the type cannot say before loading)."""
        return None


@dataclass
class MnistDatasetConfig(DatasetConfig):
    _target_: str = "workbench.data.mnist.load_mnist"
    name: str = "mnist"
    val_size: int = 1000

    def sample_shape(self) -> Optional[tuple]:
        return (28, 28, 1)

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if not (isinstance(self.val_size, int) and 1 <= self.val_size <= 4999):
            yield f"dataset.val_size={self.val_size!r} is not allowed: use an integer in 1..4999"


@dataclass
class MadeDatasetConfig(DatasetConfig):
    # data made on the spot from the run's seed: how many training and validation samples
    num_train: int = 512
    num_val: int = 256

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        for key in ("num_train", "num_val"):
            message = positive(getattr(self, key), f"dataset.{key}")
            if message:
                yield message


@dataclass
class GeneratedDatasetConfig(MadeDatasetConfig):
    # generated classes: how many, and the noise over their templates
    num_classes: int = 10
    noise: float = 0.5

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if self.num_classes < 2:
            yield f"dataset.num_classes={self.num_classes!r} is not allowed: use an integer >= 2"


@dataclass
class SyntheticDatasetConfig(GeneratedDatasetConfig):
    _target_: str = "workbench.data.synthetic.make_synthetic"
    name: str = "synthetic"
    image_shape: List[int] = field(default_factory=lambda: [28, 28, 1])

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if len(self.image_shape) != 3 or any(v < 1 for v in self.image_shape):
            yield f"dataset.image_shape={list(self.image_shape)!r} is not allowed: use [H, W, C]"

    def sample_shape(self) -> Optional[tuple]:
        return tuple(int(v) for v in self.image_shape)


def _split_problem(split: float) -> str:
    return f"dataset.validation_split={split!r} is not allowed: a fraction in (0, 1), or give dataset.validation_path"


@dataclass
class KeywordsDatasetConfig(GeneratedDatasetConfig):
    # generated keyword-spotting-shaped utterances, 49 frames x 10 coefficients (workbench/data/keywords.py)
    _target_: str = "workbench.data.keywords.make_keywords"
    name: str = "keywords"
    num_train: int = 2000
    num_val: int = 500
    num_classes: int = 8
    noise: float = 1.0

    def sample_shape(self) -> Optional[tuple]:
        return (49, 10)


@dataclass
class DigitCanvasDatasetConfig(MadeDatasetConfig):
    # the embedded segmentation task: two shipped MNIST digits per 32x32 canvas, each pixel labelled 0
    # (background) or 1 + its digit (workbench/data/digit_canvas.py); with model=digit_segmenter task=segmentation
    _target_: str = "workbench.data.digit_canvas.make_digit_canvas"
    name: str = "digit_canvas"
    num_train: int = 2000
    num_val: int = 400
    # digits kept for the validation canvases (the others make the training canvases)
    val_digits: int = 1000
    # a pixel belongs to its digit where the digit's intensity exceeds this
    ink: float = 0.3

    def sample_shape(self) -> Optional[tuple]:
        return (32, 32, 1)

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if not (isinstance(self.val_digits, int) and 1 <= self.val_digits <= 4999):
            yield f"dataset.val_digits={self.val_digits!r} is not allowed: use an integer in 1..4999"
        if not 0.0 <= self.ink < 1.0:
            yield f"dataset.ink={self.ink!r} is not allowed: an intensity in [0, 1)"


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

    def sample_shape(self) -> Optional[tuple]:
        return (self.image_size, self.image_size, 3)  # RGB crops (image_size null: the model's size)

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        image, resize = self.image_size, self.resize_size
        if not ((image is None or image >= 1) and (resize is None or resize >= (image or 1))):
            yield f"dataset.image_size={image} / dataset.resize_size={resize} are not allowed: need resize_size >= image_size >= 1"
        if len(self.mean) != 3 or len(self.std) != 3 or any(v <= 0 for v in self.std):
            yield "dataset.mean and dataset.std must be 3 values each, std > 0"


@dataclass
class ImagenetDatasetConfig(ImageFilesConfig):
    _target_: str = "workbench.data.imagenet.load_imagenet"
    name: str = "imagenet"
    train_pattern: str = "train*"
    valid_pattern: str = "valid*"
    label_offset: int = 1
    hints: ClassVar[Dict[str, str]] = {"path": "give the folder that holds the train*/valid* TFRecord files"}
    num_classes: int = 1000
    shuffle_buffer: int = 2048

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if not os.path.isdir(self.path):
            yield f"dataset.path={self.path!r} is not a folder"
            return
        valid = sorted(glob.glob(os.path.join(self.path, self.valid_pattern)))
        if not valid:
            yield f"dataset.path={self.path!r} has no files matching dataset.valid_pattern={self.valid_pattern!r}"
            return
        for first in (valid[0], *sorted(glob.glob(os.path.join(self.path, self.train_pattern)))[:1]):
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
    hints: ClassVar[Dict[str, str]] = {"path": "give a folder with one subfolder of images per class"}

    def problems(self) -> Iterator[str]:
        for key in ("path", "validation_path"):
            folder = getattr(self, key)
            if folder is not None and not os.path.isdir(folder):
                yield f"dataset.{key}={folder!r} is not a folder"
        if self.validation_path is None and not 0.0 < self.validation_split < 1.0:
            yield _split_problem(self.validation_split)
        yield from super().problems()


@dataclass
class ArraysDatasetConfig(DatasetConfig):
    # inputs of any rank and dtype with integer labels, from an .npz file (workbench/data/arrays.py):
    # x and y (validation: validation_path's x and y, else the last validation_split after a seeded shuffle),
    # or x_train, y_train, x_val, y_val
    _target_: str = "workbench.data.arrays.load_arrays"
    name: str = "arrays"
    path: str = MISSING
    validation_path: Optional[str] = None
    validation_split: float = 0.2
    # null: the largest label + 1
    num_classes: Optional[int] = None
    hints: ClassVar[Dict[str, str]] = {"path": "give an .npz file with arrays x and y (or x_train, y_train, x_val, y_val)"}

    def sample_shape(self) -> Optional[tuple]:
        return npz_array_shape(self.path)

    def problems(self) -> Iterator[str]:
        for key, alone in (("path", True), ("validation_path", False)):
            value = getattr(self, key)
            problem = npz_problem(value, alone) if value is not None else None
            if problem:
                yield f"dataset.{key}={value!r} {problem}"
        if self.validation_path is None and not 0.0 < self.validation_split < 1.0:
            yield _split_problem(self.validation_split)
        if self.num_classes is not None and self.num_classes < 2:
            yield f"dataset.num_classes={self.num_classes!r} is not allowed: an integer >= 2, or null (the largest label + 1)"
        yield from super().problems()


@dataclass
class CallableDatasetConfig(DatasetConfig):
    # your own function ("package.module:name") returning (train, validation) tf.data.Datasets of (x, y)
    # elements (batched: true: of batches); arguments are passed to it (workbench/data/callable.py)
    _target_: str = "workbench.data.callable.from_function"
    name: str = "callable"
    function: str = MISSING
    num_classes: int = MISSING
    arguments: Dict[str, Any] = field(default_factory=dict)
    batched: bool = False
    hints: ClassVar[Dict[str, str]] = {
        "function": "give package.module:name of a function returning (train, validation) tf.data.Datasets",
        "num_classes": "give the number of classes the labels run over (0: labels that are not classes, e.g. regression targets)",
    }

    def problems(self) -> Iterator[str]:
        module, colon, attribute = self.function.partition(":")
        if not (module and colon and attribute):
            yield f"dataset.function={self.function!r} is not allowed: use package.module:name"
        elif (problem := module_problem(module)) is not None:
            yield f"dataset.function={self.function!r}: {problem}"
        if self.num_classes < 2 and self.num_classes != 0:
            yield f"dataset.num_classes={self.num_classes!r} is not allowed: an integer >= 2 (0: labels that are not classes)"
        yield from super().problems()


@dataclass
class ModelConfig:
    # the builder Hydra's instantiate calls with every key below and a BuildContext (docs/extending.md)
    _target_: str = MISSING
    name: str = MISSING
    hints: ClassVar[Dict[str, str]] = {}

    def problems(self) -> Iterator[str]:
        """One line for each value that cannot be used (ranges, files: cheap probes), before TensorFlow."""
        return iter(())

    def takes_shape(self) -> Optional[tuple]:
        """The shape of one input it takes (no batch axis), None when the type cannot say before loading."""
        shape = getattr(self, "input_shape", None)
        return tuple(shape) if shape is not None else None


@dataclass
class EmbeddedModelConfig(ModelConfig):
    # trained on first use on the chosen dataset, cached under paths.cache_dir keyed by this config
    num_classes: int = 10
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.003
    bn_momentum: float = 0.9
    augment: bool = True

    def problems(self) -> Iterator[str]:
        for message in (positive(self.epochs, "model.epochs", allow_zero=True), positive(self.batch_size, "model.batch_size")):
            if message:
                yield message
        if self.learning_rate <= 0:
            yield f"model.learning_rate={self.learning_rate!r} is not allowed: use a value > 0"
        if not 0.0 <= self.bn_momentum < 1.0:
            yield f"model.bn_momentum={self.bn_momentum!r} is not allowed: use a value in [0, 1)"


@dataclass
class MnistMobilenetConfig(EmbeddedModelConfig):
    _target_: str = "workbench.models.embedded.mnist_mobilenet"
    name: str = "mnist_mobilenet"
    input_shape: List[int] = field(default_factory=lambda: [28, 28, 1])
    width: int = 16
    epochs: int = 20

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        message = positive(self.width, "model.width")
        if message:
            yield message


@dataclass
class MnistMobilenetV2Config(EmbeddedModelConfig):
    # keras.applications.MobileNetV2 (random init) on the digits resized to 32×32×3
    _target_: str = "workbench.models.embedded.mnist_mobilenet_v2"
    name: str = "mnist_mobilenet_v2"
    input_shape: List[int] = field(default_factory=lambda: [32, 32, 3])
    alpha: float = 0.35

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if self.alpha <= 0:
            yield f"model.alpha={self.alpha!r} is not allowed: use a value > 0 (e.g. 0.35)"


@dataclass
class KwsConv1dConfig(EmbeddedModelConfig):
    # a Conv1D keyword spotter over 49 frames x 10 cepstral coefficients (dataset=keywords), trained on first use
    _target_: str = "workbench.models.embedded.kws_conv1d"
    name: str = "kws_conv1d"
    input_shape: List[int] = field(default_factory=lambda: [49, 10])
    num_classes: int = 8
    width: int = 32
    epochs: int = 8
    augment: bool = False  # the image shifts do not apply to frames

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        message = positive(self.width, "model.width")
        if message:
            yield message
        if self.augment:
            yield "model.augment=true is not allowed for kws_conv1d: the augmentation shifts images, these are cepstral frames"


@dataclass
class DigitSegmenterConfig(EmbeddedModelConfig):
    # a small U-Net (Conv2D, Conv2DTranspose, skip Concatenates) giving per-pixel classes (dataset=digit_canvas)
    _target_: str = "workbench.models.embedded.digit_segmenter"
    name: str = "digit_segmenter"
    input_shape: List[int] = field(default_factory=lambda: [32, 32, 1])
    num_classes: int = 11
    width: int = 16
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.01
    augment: bool = False  # a shift would move the canvas but not its labels

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        message = positive(self.width, "model.width")
        if message:
            yield message
        if self.augment:
            yield "model.augment=true is not allowed for digit_segmenter: the shifts move the image but not its per-pixel labels"


@dataclass
class KerasAppConfig(ModelConfig):
    _target_: str = "workbench.models.embedded.application"
    input_shape: List[int] = field(default_factory=lambda: [224, 224, 3])
    num_classes: int = 1000
    # null: random initialisation; else a local weights file (never downloaded)
    weights: Optional[str] = None

    def problems(self) -> Iterator[str]:
        if self.weights is not None and not os.path.isfile(self.weights):
            yield f"model.weights={self.weights!r} does not exist: give a local file or null (weights are never downloaded)"
        if len(self.input_shape) != 3:
            yield f"model.input_shape={list(self.input_shape)!r} is not allowed: use [H, W, C]"


@dataclass
class KerasFileConfig(ModelConfig):
    _target_: str = "workbench.models.embedded.keras_file"
    name: str = "keras_file"
    path: str = MISSING
    # custom layer classes the file needs: class name -> "package.module:Name"
    custom_objects: Dict[str, str] = field(default_factory=dict)
    hints: ClassVar[Dict[str, str]] = {"path": "give a local .keras or .h5 file"}

    def takes_shape(self) -> Optional[tuple]:
        return keras_input_shape(self.path) if str(self.path).endswith(".keras") and os.path.isfile(self.path) else None

    def problems(self) -> Iterator[str]:
        if not str(self.path).endswith(KERAS_SUFFIXES):
            yield f"model.path={self.path!r} is not allowed: use a .keras or .h5 file"
        elif not os.path.isfile(self.path):
            yield f"model.path={self.path!r} does not exist"
        else:
            problem = keras_file_problem(self.path)
            if problem is None and self.path.endswith(".keras"):
                problem = keras_archive_problem(self.path, self.custom_objects or {})
            if problem:
                yield f"model.path={self.path!r} {problem}"


@dataclass
class TaskConfig:
    # what the model is for and how its quality is measured (workbench/evaluation/tasks.py): the Task class
    # Hydra's instantiate builds with the keys below; every stage scores FP32, sim and int8 TFLite by it
    _target_: str = MISSING
    hints: ClassVar[Dict[str, str]] = {}

    def problems(self) -> Iterator[str]:
        return iter(())


@dataclass
class ClassificationTaskConfig(TaskConfig):
    _target_: str = "workbench.evaluation.tasks.Classification"


@dataclass
class SegmentationTaskConfig(TaskConfig):
    # labels: one class index per pixel (N, H, W), outputs (N, H, W, classes); mean IoU over the classes present
    _target_: str = "workbench.evaluation.tasks.Segmentation"
    # null: the model output's channel count
    num_classes: Optional[int] = None

    def problems(self) -> Iterator[str]:
        if self.num_classes is not None and self.num_classes < 2:
            yield f"task.num_classes={self.num_classes!r} is not allowed: an integer >= 2, or null (the model output's channels)"


@dataclass
class RegressionTaskConfig(TaskConfig):
    # float labels of the output's shape; MAE (lower is better), RMSE beside it; QAT fine-tunes on MSE
    _target_: str = "workbench.evaluation.tasks.Regression"


@dataclass
class FidelityTaskConfig(TaskConfig):
    # no labels: each sample's output against the FP32 model's (SQNR in dB, cosine similarity)
    _target_: str = "workbench.evaluation.tasks.Fidelity"


@dataclass
class CustomTaskConfig(TaskConfig):
    # your metric: "package.module:name" of a function (outputs, labels) -> one score per sample
    _target_: str = "workbench.evaluation.tasks.Custom"
    score: str = MISSING
    metric_name: str = "score"
    larger_is_better: bool = True
    # scores are fractions in [0, 1], shown in %
    percent_scale: bool = False
    # a Keras loss name QAT fine-tunes with (null: +stage=qat is refused)
    training_loss: Optional[str] = None
    hints: ClassVar[Dict[str, str]] = {"score": "give package.module:name of a function (outputs, labels) -> one score per sample"}

    def problems(self) -> Iterator[str]:
        module, colon, attribute = self.score.partition(":")
        if not (module and colon and attribute):
            yield f"task.score={self.score!r} is not allowed: use package.module:name"
        elif (problem := module_problem(module)) is not None:
            yield f"task.score={self.score!r}: {problem}"


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

    def __post_init__(self) -> None:
        for key in ("num_quant_samples", "num_bias_correct_samples", "batch_size"):
            check(positive(getattr(self, key), key))


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

    def __post_init__(self) -> None:
        check(positive(self.epochs, "epochs", allow_zero=True))
        check(positive(self.decay_steps, "decay_steps"))
        check(positive(self.batch_size, "batch_size"))
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} is not allowed: use a value > 0")


@dataclass
class AdaroundConfig(AdaroundParameters):
    # AdaRound's own parameters are AdaroundParameters' fields (AIMET's names: adaround.num_iterations, ...,
    # defaults written there once; the default iteration count is chosen by measurement: bench/adaround_speed.py);
    # its seed follows the run's (conf/config.yaml). The stage's own steps:
    # the steps before AdaRound: BN fold, then cross-layer equalization (cle needs the fold)
    fold_batch_norms: bool = True
    cle: bool = True
    # convert the result to a fully integer TFLite model and measure tflite/top1 (8-bit weights only)
    export_tflite: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cle and not self.fold_batch_norms:
            raise ValueError("cle=true needs adaround.fold_batch_norms=true (CLE folds first): set adaround.cle=false too")


@dataclass
class AnalyzeConfig:
    # validation images every per-layer configuration is evaluated on (6 evaluations per quantized layer)
    eval_samples: int = 500
    # BN fold always; cross-layer equalization first (analyze.cle=false: fold only)
    cle: bool = True
    # how many of the most harmful layers the run description and the histogram figure name
    top_k: int = 5

    def __post_init__(self) -> None:
        check(positive(self.eval_samples, "eval_samples"))
        check(positive(self.top_k, "top_k"))


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
    # a choice already made (a run's mixed_precision_overrides.json): no search, that configuration is built as the
    # search would have built it (the same AdaRounded kernels), e.g. to rerun AutoQuant's recipe
    chosen: Optional[str] = None

    def __post_init__(self) -> None:
        check(positive(self.eval_samples, "eval_samples"))
        if self.chosen is not None:
            try:
                load_overrides(self.chosen)
            except ValueError as err:
                raise ValueError(str(err).replace("overrides=", "chosen=", 1)) from None
        candidates = [list(c) for c in self.candidates]
        if not (
            len(candidates) >= 2
            and all(len(c) == 2 and all(isinstance(b, int) and MIN_BITWIDTH <= b <= MAX_BITWIDTH for b in c) for c in candidates)
        ):
            raise ValueError(
                f"candidates={candidates!r} is not allowed: two or more [weight bits, activation bits] pairs in "
                f"{MIN_BITWIDTH}..{MAX_BITWIDTH}, e.g. [[8,8],[4,8]]"
            )
        if not 0.0 <= self.allowed_accuracy_drop <= 1.0:
            raise ValueError(f"allowed_accuracy_drop={self.allowed_accuracy_drop!r} is not allowed: a fraction in [0, 1] (0.01 = 1 point)")


# AIMET AutoQuant's weight/activation scheme candidates (a percentile one with its percentile), and our measured best
AUTOQUANT_SCHEMES = [
    "tf/tf",
    "tf_enhanced/tf",
    "tf_enhanced/tf_enhanced",
    "tf_enhanced/percentile:99.9",
    "tf_enhanced/percentile:99.99",
    "tf/tf_enhanced",
]


def parse_scheme_pair(text: str) -> tuple[str, str, Optional[float]]:
    """``param/output[:percentile]`` → (param scheme, output scheme, percentile or None); ValueError if not allowed."""
    allowed = {"tf", "tf_enhanced", "percentile"}
    pair, _, percentile = text.partition(":")
    param, slash, output = pair.partition("/")
    if not slash or param not in allowed or output not in allowed or (percentile and output != "percentile" and param != "percentile"):
        raise ValueError(
            f"schemes: {text!r} is not allowed: use PARAM/OUTPUT of tf, tf_enhanced, percentile (percentile:P, e.g. tf/percentile:99.9)"
        )
    value = float(percentile) if percentile else None
    if value is not None and not 50.0 <= value <= 100.0:
        raise ValueError(f"schemes: {text!r} is not allowed: a percentile in [50, 100]")
    return param, output, value


@dataclass
class AutoquantConfig:
    # the search stops at the first step whose sim top-1 on the search images is within this of FP32's
    allowed_accuracy_drop: float = 0.01
    # the share of the validation split every decision uses (seeded draw); the rest is held out and evaluates
    # the final choice only, once
    search_fraction: float = 0.5
    # the seed of that draw; null: the run's seed (set it to draw other search/held-out images without reshuffling
    # the dataset's own train/validation split, which the run's seed also draws). A draw picked for its held-out
    # figure makes that figure a choice's again: report every draw, as bench/autoquant_draws.py does
    split_seed: Optional[int] = None
    # scheme candidates, PARAM/OUTPUT[:percentile] (AIMET's, and tf/tf_enhanced)
    schemes: List[str] = field(default_factory=lambda: list(AUTOQUANT_SCHEMES))
    # mixed precision (AMP) after AdaRound when the target is still missed: [weight bits, activation bits] candidates
    # per layer; null: [[8, quant.output_bw], [quant.param_bw, quant.output_bw]] (layers raised to 8-bit weights
    # where that buys the accuracy back), no step when quant.param_bw >= 8; [] never
    candidates: Optional[List[List[int]]] = None
    # the last step: QAT with range learning (trains on the training split)
    allow_training: bool = False
    # budget: stop after this many trials (sim evaluations) or minutes; null: no limit
    max_trials: Optional[int] = None
    max_minutes: Optional[float] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.allowed_accuracy_drop <= 1.0:
            raise ValueError(f"allowed_accuracy_drop={self.allowed_accuracy_drop!r} is not allowed: a fraction in [0, 1] (0.01 = 1 point)")
        if not 0.0 < self.search_fraction < 1.0:
            raise ValueError(f"search_fraction={self.search_fraction!r} is not allowed: a fraction in (0, 1)")
        if self.split_seed is not None and self.split_seed < 0:
            raise ValueError(f"split_seed={self.split_seed!r} is not allowed: an integer >= 0, or null (the run's seed)")
        if not self.schemes:
            raise ValueError("schemes is empty: give one or more PARAM/OUTPUT pairs, e.g. [tf/tf, tf_enhanced/tf]")
        for text in self.schemes:
            parse_scheme_pair(str(text))
        check(positive(self.max_trials, "max_trials", allow_none=True))
        if self.candidates:  # the same rule as amp.candidates
            AmpConfig(candidates=[list(c) for c in self.candidates])
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes!r} is not allowed: a number of minutes > 0, or null")


@dataclass
class ExportConfig:
    # the exporting stages (qat, adaround) log their model as an MLflow model (Keras flavor, with the int8
    # TFLite file and encodings beside it); a name here also registers it in the Model Registry
    register_as: Optional[str] = None

    def __post_init__(self) -> None:
        name = self.register_as
        if not (name is None or (isinstance(name, str) and REGISTERED_NAME.fullmatch(name) is not None)):
            raise ValueError(
                f"register_as={name!r} is not allowed: a registered model name of letters, digits, '.', '_', '-' and spaces "
                "(no '/', ':' or '%'), at most 256 characters"
            )


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
    task: Any = MISSING  # conf/config.yaml's defaults: task=classification
    quant: QuantSettings = field(default_factory=QuantSettings)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cle: CLEConfig = field(default_factory=CLEConfig)
    bc: BiasCorrectionConfig = field(default_factory=BiasCorrectionConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    adaround: AdaroundConfig = field(default_factory=AdaroundConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    autoquant: AutoquantConfig = field(default_factory=AutoquantConfig)
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

    def __post_init__(self) -> None:
        check(positive(self.threads, "threads", allow_zero=True, allow_none=True))
        if self.verbosity not in (0, 1, 2):
            raise ValueError(f"verbosity={self.verbosity!r} is not allowed: 0 (quiet), 1 (progress, default) or 2 (everything)")


def plain(node: Any) -> Dict[str, Any]:
    """A typed node's values as plain data, enums as their YAML values (a cache key's, a log's form); a schema-less
    node (a dict) as it is."""
    if isinstance(node, dict):
        return dict(node)
    return OmegaConf.to_container(OmegaConf.structured(node), resolve=True, enum_to_str=True)  # type: ignore[return-value]


def config_type() -> type:
    """``Config`` with a node for each stage that declares its own options (``Stage.schema``), named after it."""
    taken = {f.name for f in fields(Config)}
    own = [(r.name, r.schema, field(default_factory=r.schema)) for r in stages().values() if r.schema is not None]
    clash = [name for name, _, _ in own if name in taken]
    if clash:
        raise ValueError(f"stage {clash[0]} declares options, but {clash[0]!r} is already a config node: rename the stage")
    return make_dataclass("Config", own, bases=(Config,)) if own else Config


def register_configs() -> None:
    """Register the schemas (YAML options name them in their defaults lists) and our resolvers: ``wb.safe`` makes
    one folder name of a string (a sweep job's overrides), ``wb.pid`` the process id (two sweeps started in the
    same second get their own folders)."""
    OmegaConf.register_new_resolver("wb.safe", safe_component, replace=True)
    OmegaConf.register_new_resolver("wb.pid", os.getpid, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=config_type())
    cs.store(group="hydra/help", name="workbench", node={"app_name": "workbench", "header": "", "footer": "", "template": help_template()})
    cs.store(group="quant", name="base_quant", node=QuantSettings)
    cs.store(group="tracking", name="base_tracking", node=TrackingConfig)
    cs.store(group="paths", name="base_paths", node=PathsConfig)
    cs.store(group="dataset", name="base_mnist", node=MnistDatasetConfig)
    cs.store(group="dataset", name="base_synthetic", node=SyntheticDatasetConfig)
    cs.store(group="dataset", name="base_imagenet", node=ImagenetDatasetConfig)
    cs.store(group="dataset", name="base_image_folder", node=ImageFolderDatasetConfig)
    cs.store(group="dataset", name="base_arrays", node=ArraysDatasetConfig)
    cs.store(group="dataset", name="base_callable", node=CallableDatasetConfig)
    cs.store(group="dataset", name="base_keywords", node=KeywordsDatasetConfig)
    cs.store(group="model", name="base_mnist_mobilenet", node=MnistMobilenetConfig)
    cs.store(group="model", name="base_mnist_mobilenet_v2", node=MnistMobilenetV2Config)
    cs.store(group="model", name="base_keras_app", node=KerasAppConfig)
    cs.store(group="model", name="base_kws_conv1d", node=KwsConv1dConfig)
    cs.store(group="model", name="base_keras_file", node=KerasFileConfig)
    cs.store(group="model", name="base_digit_segmenter", node=DigitSegmenterConfig)
    cs.store(group="dataset", name="base_digit_canvas", node=DigitCanvasDatasetConfig)
    for kind, node in (
        ("classification", ClassificationTaskConfig),
        ("segmentation", SegmentationTaskConfig),
        ("regression", RegressionTaskConfig),
        ("fidelity", FidelityTaskConfig),
        ("custom", CustomTaskConfig),
    ):
        cs.store(group="task", name=f"base_{kind}", node=node)
    for name in stage_names():  # a plug-in stage without its YAML file: +stage=NAME still selects it
        if not (CONF_DIR / "stage" / f"{name}.yaml").exists():
            cs.store(group="stage", name=name, node={"stage": {"name": name}}, package="_global_")
