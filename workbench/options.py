"""Typed options shared by the library and the configs (no TensorFlow, no Hydra).

String enums map 1:1 to YAML values; :class:`QuantSettings` is what the quantization
simulator takes, so it can be used as a plain Python library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

MIN_BITWIDTH = 2
MAX_BITWIDTH = 16


class QuantScheme(str, Enum):
    """Encoding analyzers (AIMET names without the ``post_training_`` prefix)."""

    tf = "tf"
    tf_enhanced = "tf_enhanced"
    percentile = "percentile"
    # range-learning QAT: encodings initialised by tf / tf_enhanced, then min/max trained
    training_range_learning_with_tf_init = "training_range_learning_with_tf_init"
    training_range_learning_with_tf_enhanced_init = "training_range_learning_with_tf_enhanced_init"

    @property
    def range_learning(self) -> bool:
        return self.value.startswith("training_range_learning")

    @property
    def range_learning_variant(self) -> QuantScheme:
        """The range-learning scheme initialised like this one (itself if none exists)."""
        return {
            QuantScheme.tf: QuantScheme.training_range_learning_with_tf_init,
            QuantScheme.tf_enhanced: QuantScheme.training_range_learning_with_tf_enhanced_init,
        }.get(self, self)

    @property
    def analyzer(self) -> QuantScheme:
        """The calibration analyzer: a range-learning scheme calibrates with its init scheme."""
        if self is QuantScheme.training_range_learning_with_tf_init:
            return QuantScheme.tf
        if self is QuantScheme.training_range_learning_with_tf_enhanced_init:
            return QuantScheme.tf_enhanced
        return self


class Target(str, Enum):
    """What the simulator imitates."""

    aimet = "aimet"  # AIMET's default quantsim config
    tflite = "tflite"  # the TFLite int8 runtime: its weight grids, int32 biases, fixed-range and same-scale ops


class Rounding(str, Enum):
    nearest = "nearest"
    stochastic = "stochastic"


class ReLU6Mode(str, Enum):
    """What cross-layer scaling does with a ReLU6 between scaled layers."""

    clip = "clip"  # exact: a per-channel clip at 6/s
    relu = "relu"  # AIMET TF: replace by ReLU (changes the function)
    break_chain = "break_chain"  # end the CLS chain there (aimet-torch >= 2.4)


class BiasCorrectionMode(str, Enum):
    empirical = "empirical"  # compare FP32 and quantized layer outputs on data
    analytical = "analytical"  # data-free, from the preceding BN; other layers stay uncorrected
    auto = "auto"  # analytical where a BN + activation pattern allows, else empirical


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings: layers whose name fully matches ``pattern`` (a regular expression; a plain
    name matches itself) use these bitwidths; ``enabled=False`` leaves their weights and output float."""

    pattern: str
    param_bw: int | None = None
    output_bw: int | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(f"override pattern {self.pattern!r} is not a regular expression: {err}") from None
        for key in ("param_bw", "output_bw"):
            bw = getattr(self, key)
            if bw is not None and (not isinstance(bw, int) or isinstance(bw, bool) or not MIN_BITWIDTH <= bw <= MAX_BITWIDTH):
                allowed = f"use an integer in {MIN_BITWIDTH}..{MAX_BITWIDTH}"
                raise ValueError(f"override {self.pattern!r}: {key}={bw!r} is not allowed: {allowed}")

    def matches(self, layer_name: str) -> bool:
        return re.fullmatch(self.pattern, layer_name) is not None


OVERRIDE_KEYS = ("param_bw", "output_bw", "enabled")


def parse_overrides(mapping: object) -> tuple[LayerOverride, ...]:
    """``{pattern: {param_bw, output_bw, enabled}}`` (as read from YAML/JSON) to overrides, in order."""
    if not isinstance(mapping, dict):
        raise ValueError("overrides must map layer names (or regular expressions) to {param_bw, output_bw, enabled}")
    out = []
    for pattern, options in mapping.items():
        if not isinstance(options, dict) or not set(options) <= set(OVERRIDE_KEYS):
            raise ValueError(f"override {pattern!r}: use a mapping with keys among {', '.join(OVERRIDE_KEYS)}, got {options!r}")
        out.append(LayerOverride(str(pattern), **options))
    return tuple(out)


def load_overrides(path: str) -> tuple[LayerOverride, ...]:
    """Read an overrides file (YAML or JSON: JSON is YAML); its problems as one-line ValueErrors."""
    import os

    import yaml

    if not os.path.isfile(path):
        raise ValueError(f"overrides={path!r} is not a file: give a YAML/JSON file of per-layer settings")
    try:
        with open(path) as f:
            return parse_overrides(yaml.safe_load(f) or {})
    except yaml.YAMLError as err:
        raise ValueError(f"overrides={path!r} is not readable YAML/JSON: {str(err).splitlines()[0]}") from None
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"overrides={path!r}: {err}") from None


def _as_overrides(value: Any) -> tuple[LayerOverride, ...]:
    """Overrides as given: a file (the config's ``quant.overrides=FILE``), a mapping, or LayerOverrides."""
    if value is None:
        return ()
    if isinstance(value, str):
        return load_overrides(value)
    if isinstance(value, Mapping):
        return parse_overrides(dict(value))
    return tuple(o if isinstance(o, LayerOverride) else LayerOverride(**o) for o in value)


def positive(value, key: str, allow_zero: bool = False, allow_none: bool = False) -> str | None:
    """``key=value is not allowed: use an integer >= 1`` (or 0, or null), or None when it is."""
    if value is None and allow_none:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return None
    return f"{key}={value!r} is not allowed: use an integer >= {low}" + (" or null" if allow_none else "")


def check(message: str | None) -> None:
    """Raise a field check's one-line message as a ValueError (the config prefixes its node's name)."""
    if message:
        raise ValueError(message)


@dataclass
class QuantSettings:
    """Quantization simulator settings (AIMET's quantsim arguments and config flags): the ``quant`` config node.

    ``scheme`` sets both analyzers; ``param_scheme`` / ``output_scheme`` (None: ``scheme``) choose the
    weight and the activation analyzer apart (a per-channel histogram search over a depthwise channel's
    nine weights is a trap that ``tf`` avoids). Each field is checked in ``__post_init__``, with the one-line
    message the command line shows prefixed by ``quant.``. Treat an instance as a value: change it with
    :func:`dataclasses.replace` (it is not frozen only so that Hydra can merge command-line values into it).
    """

    scheme: QuantScheme = QuantScheme.tf  # chosen by measurement: docs/results.md
    # None: follow ``scheme`` (resolved in __post_init__, so always a QuantScheme afterwards)
    if TYPE_CHECKING:  # what the fields hold after __post_init__
        param_scheme: QuantScheme = None  # type: ignore[assignment]
        output_scheme: QuantScheme = None  # type: ignore[assignment]
    else:  # what a config may give (OmegaConf reads these annotations)
        param_scheme: QuantScheme | None = None
        output_scheme: QuantScheme | None = None
    param_bw: int = 8
    output_bw: int = 8
    per_channel: bool = False
    param_symmetric: bool = True
    output_symmetric: bool = False
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    rounding: Rounding = Rounding.nearest
    percentile: float = 99.99
    # aimet: AIMET's default config; tflite: what the TFLite int8 runtime computes (conf/quant/tflite.yaml)
    target: Target = Target.aimet
    # per-layer bitwidths / float layers, first match wins: LayerOverrides, or (from the config) a YAML/JSON
    # file {layer name or regex: {param_bw, output_bw, enabled}}; a tuple of LayerOverride after __post_init__
    overrides: Any = ()
    # the images the encodings are computed from
    calibration_samples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self.target = Target(self.target)
        self.scheme = QuantScheme(self.scheme)
        self.param_scheme = QuantScheme(self.param_scheme or self.scheme)
        self.output_scheme = QuantScheme(self.output_scheme or self.scheme)
        self.rounding = Rounding(self.rounding)
        for key in ("param_bw", "output_bw"):
            bw = getattr(self, key)
            if not isinstance(bw, int) or not MIN_BITWIDTH <= bw <= MAX_BITWIDTH:
                raise ValueError(f"{key}={bw!r} is not allowed: bitwidths are integers in {MIN_BITWIDTH}..{MAX_BITWIDTH}")
        if not 50.0 <= float(self.percentile) <= 100.0:
            raise ValueError(f"percentile={self.percentile!r} is not allowed: use a value in [50, 100]")
        problem = target_conflict(self)
        if problem:
            raise ValueError(problem)
        self.overrides = _as_overrides(self.overrides)
        check(positive(self.calibration_samples, "calibration_samples"))

    def override_for(self, layer_name: str) -> LayerOverride | None:
        return next((o for o in self.overrides if o.matches(layer_name)), None)

    def param_bw_for(self, layer_name: str) -> int:
        o = self.override_for(layer_name)
        return o.param_bw if o is not None and o.param_bw is not None else self.param_bw

    def output_bw_for(self, layer_name: str) -> int:
        o = self.override_for(layer_name)
        return o.output_bw if o is not None and o.output_bw is not None else self.output_bw

    def quantized(self, layer_name: str) -> bool:
        o = self.override_for(layer_name)
        return o is None or o.enabled

    def with_range_learning(self) -> QuantSettings:
        """The same settings with both schemes switched to their range-learning variants, strict weight grids."""
        return replace(
            self,
            scheme=self.scheme.range_learning_variant,
            param_scheme=self.param_scheme.range_learning_variant,
            output_scheme=self.output_scheme.range_learning_variant,
            strict_symmetric=True,
        )


def target_conflict(q) -> str | None:
    """Why settings (a QuantSettings or the ``quant`` config) do not fit their target, or None."""
    if Target(q.target) is not Target.tflite:
        return None
    needed = {
        "strict_symmetric": True,
        "param_symmetric": True,
        "output_symmetric": False,
        "param_bw": 8,
        "output_bw": 8,
    }
    wrong = [f"{key}={str(value).lower()}" for key, value in needed.items() if getattr(q, key) != value]
    if not wrong:
        return None
    return (
        f"target=tflite simulates TFLite's int8 grids and needs {', '.join(wrong)} "
        "(narrow-range int8 weights, asymmetric int8 activations): use quant=tflite, which sets them"
    )


@dataclass
class AdaroundParameters:
    """AIMET's names: ``num_batches`` batches of ``batch_size`` samples are cached; each iteration uses one batch.

    The ``adaround`` config node is this type plus the stage's own steps (``config.schema.AdaroundConfig``)."""

    num_batches: int = 16
    num_iterations: int = 500
    default_reg_param: float = 0.01
    default_beta_range: tuple[float, float] = (20.0, 2.0)  # from, to (a list in a config)
    default_warm_start: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 32
    quantized_input: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("num_batches", "num_iterations", "batch_size"):
            check(positive(getattr(self, key), key))
        if not 0.0 <= float(self.default_warm_start) < 1.0:
            raise ValueError(f"default_warm_start={self.default_warm_start!r} is not allowed: use a value in [0, 1)")
        if float(self.default_reg_param) < 0:
            raise ValueError(f"default_reg_param={self.default_reg_param!r} is not allowed: use a value >= 0")
        if float(self.learning_rate) <= 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} is not allowed: use a value > 0")
        beta = tuple(float(b) for b in self.default_beta_range)
        if len(beta) != 2 or min(beta) <= 0:
            raise ValueError(f"default_beta_range={list(beta)!r} is not allowed: two values > 0, e.g. [20, 2]")
        self.default_beta_range = (beta[0], beta[1])  # a config's list, a caller's tuple: one form
