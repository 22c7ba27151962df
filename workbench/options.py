"""Typed options shared by the library and the configs (no TensorFlow, no Hydra).

String enums map 1:1 to YAML values; :class:`QuantSettings` is what the quantization
simulator takes, so it can be used as a plain Python library.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from enum import Enum

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
    """Read an overrides file (YAML or JSON: JSON is YAML)."""
    import yaml

    with open(path) as f:
        return parse_overrides(yaml.safe_load(f) or {})


@dataclass(frozen=True)
class QuantSettings:
    """Quantization simulator settings (AIMET's quantsim arguments and config flags).

    ``scheme`` sets both analyzers; ``param_scheme`` / ``output_scheme`` (None: ``scheme``) choose the
    weight and the activation analyzer apart (a per-channel histogram search over a depthwise channel's
    nine weights is a trap that ``tf`` avoids).
    """

    scheme: QuantScheme = QuantScheme.tf  # chosen by measurement: docs/results.md
    # None: follow ``scheme`` (resolved in __post_init__, so always a QuantScheme afterwards)
    param_scheme: QuantScheme = None  # type: ignore[assignment]
    output_scheme: QuantScheme = None  # type: ignore[assignment]
    param_bw: int = 8
    output_bw: int = 8
    per_channel: bool = False
    param_symmetric: bool = True
    output_symmetric: bool = False
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    rounding: Rounding = Rounding.nearest
    percentile: float = 99.99
    target: Target = Target.aimet
    # per-layer bitwidths / float layers, first match wins (quant.overrides=<file>)
    overrides: tuple[LayerOverride, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Target(self.target))
        object.__setattr__(self, "scheme", QuantScheme(self.scheme))
        for key in ("param_scheme", "output_scheme"):
            object.__setattr__(self, key, QuantScheme(getattr(self, key) or self.scheme))
        object.__setattr__(self, "rounding", Rounding(self.rounding))
        for key in ("param_bw", "output_bw"):
            bw = getattr(self, key)
            if not isinstance(bw, int) or not MIN_BITWIDTH <= bw <= MAX_BITWIDTH:
                raise ValueError(f"{key}={bw!r} is not allowed: bitwidths are integers in {MIN_BITWIDTH}..{MAX_BITWIDTH}")
        if not 50.0 <= float(self.percentile) <= 100.0:
            raise ValueError(f"percentile={self.percentile!r} is not allowed: use a value in [50, 100]")
        problem = target_conflict(self)
        if problem:
            raise ValueError(problem)

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


def options_of(kind, mapping, **extra):
    """An instance of the dataclass ``kind`` from the keys of ``mapping`` it has fields for (a config node's
    or a dict's; the others are left out), plus ``extra``: one mapping, its checks in ``kind`` alone."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: mapping[k] for k in mapping if k in names}, **extra)


@dataclass(frozen=True)
class AdaroundParameters:
    """AIMET's names: ``num_batches`` batches of ``batch_size`` samples are cached; each iteration uses one batch."""

    num_batches: int = 16
    num_iterations: int = 500
    default_reg_param: float = 0.01
    default_beta_range: tuple[float, float] = (20.0, 2.0)
    default_warm_start: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 32
    quantized_input: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("num_batches", "num_iterations", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} is not allowed: use an integer >= 1")
        if not 0.0 <= float(self.default_warm_start) < 1.0:
            raise ValueError(f"default_warm_start={self.default_warm_start!r} is not allowed: use a value in [0, 1)")
        if float(self.default_reg_param) < 0:
            raise ValueError(f"default_reg_param={self.default_reg_param!r} is not allowed: use a value >= 0")
        if float(self.learning_rate) <= 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} is not allowed: use a value > 0")
        beta = tuple(float(b) for b in self.default_beta_range)
        if len(beta) != 2 or min(beta) <= 0:
            raise ValueError(f"default_beta_range={list(beta)!r} is not allowed: two values > 0, e.g. [20, 2]")
        object.__setattr__(self, "default_beta_range", beta)  # a config's list, a caller's tuple: one form
