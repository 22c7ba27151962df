"""Which weights of a layer type are quantized, and why the others stay float: one entry per type.

AIMET's default quantsim config (and TF-MOT's ``default_8bit_quantize_registry``) quantize the
weight tensors that feed a matmul or convolution and leave biases (int32 at run time, from input
scale × weight scale) and normalization parameters in float. After :mod:`workbench.graph.flatten`
every such layer has exactly one quantized weight (separable convolutions and attention are split into
their primitives first), so a param quantizer is named by its layer. A weight of a type without an
entry is never silently float: :func:`weight_status` names it with the reason ``no rule``, and the
run's coverage account reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from workbench.graph.layers import AttentionCombine, AttentionScores, ChannelAffine, ChannelClip

BIAS = "bias: float, as in AIMET's default config (int32 at input scale × weight scale on the device)"
NORM = "normalization parameter: float, as in AIMET's default config"
PREPROCESSING = "input preprocessing constant: float (its output is quantized like any op's)"


@dataclass(frozen=True)
class WeightRule:
    """``weight``: the attribute of the quantized tensor; ``channel_axis``: its output-channel axis
    (``"depthwise"``: the last two axes together, C·M); ``floats``: other weights kept float, with why."""

    weight: str | None
    channel_axis: int | str = -1
    floats: tuple[tuple[str, str], ...] = (("bias", BIAS),)


CONVOLUTION = WeightRule("kernel")
DEPTHWISE = WeightRule("kernel", "depthwise")
TRANSPOSED = WeightRule("kernel", -2)  # Conv*Transpose kernels are (…, out, in)
NORMALIZATION = WeightRule(None, floats=(("gamma", NORM), ("beta", NORM), ("moving_mean", NORM), ("moving_variance", NORM)))

# most specific first: isinstance order matters (Conv2DTranspose is a Conv2D subclass in some Keras versions)
RULES: tuple[tuple[type, WeightRule], ...] = (
    (keras.layers.Conv1DTranspose, TRANSPOSED),
    (keras.layers.Conv2DTranspose, TRANSPOSED),
    (keras.layers.Conv3DTranspose, TRANSPOSED),
    (keras.layers.DepthwiseConv1D, DEPTHWISE),
    (keras.layers.DepthwiseConv2D, DEPTHWISE),
    (keras.layers.Conv1D, CONVOLUTION),
    (keras.layers.Conv2D, CONVOLUTION),
    (keras.layers.Conv3D, CONVOLUTION),
    (keras.layers.Dense, CONVOLUTION),
    (keras.layers.EinsumDense, CONVOLUTION),
    (keras.layers.Embedding, WeightRule("embeddings", floats=())),
    (keras.layers.BatchNormalization, NORMALIZATION),
    (keras.layers.Normalization, WeightRule(None, floats=tuple((w, PREPROCESSING) for w in ("mean", "variance", "count")))),
    (keras.layers.LayerNormalization, NORMALIZATION),
    (keras.layers.GroupNormalization, NORMALIZATION),
    (ChannelAffine, WeightRule(None, floats=(("scale", "an unfolded batch norm's scale: " + NORM), ("shift", "its shift: " + NORM)))),
    (ChannelClip, WeightRule(None, floats=(("upper", "a ReLU6 clip threshold after CLE (a constant of the op, not a weight)"),))),
    (AttentionScores, WeightRule(None, floats=())),
    (AttentionCombine, WeightRule(None, floats=())),
)
# layers whose per-channel scale is a normalization-like parameter (keras.applications' ConvNeXt LayerScale)
NORMALIZATION_LIKE_NAMES = ("LayerScale",)
NO_RULE = "no rule"


def channels_last(weight, channel_axis: int | str, xp=np):
    """``weight`` with its output channels on the last axis (``"depthwise"``: the last two axes as C·M), for
    numpy (``xp=np``) or TensorFlow tensors (``xp=tf.experimental.numpy``, so QAT's gradients pass through)."""
    if channel_axis == "depthwise":
        return xp.reshape(weight, (*weight.shape[:-2], -1))
    return weight if channel_axis == -1 else xp.moveaxis(weight, int(channel_axis), -1)


def from_channels_last(view, channel_axis: int | str, shape, xp=np):
    """The inverse of :func:`channels_last`: a tensor of the weight's own ``shape``."""
    if channel_axis == "depthwise":
        return xp.reshape(view, tuple(shape))
    return view if channel_axis == -1 else xp.moveaxis(view, -1, int(channel_axis))


def rule_for(layer: keras.layers.Layer) -> WeightRule | None:
    for cls, rule in RULES:
        if isinstance(layer, cls):
            return rule
    if type(layer).__name__ in NORMALIZATION_LIKE_NAMES:
        return WeightRule(None, floats=tuple((w.path.split("/")[-1], NORM) for w in layer.weights))
    return None


def quantized_weight(layer: keras.layers.Layer) -> str | None:
    """The attribute of ``layer``'s quantized weight (``kernel``, ``embeddings``), or None."""
    rule = rule_for(layer)
    if rule is None or rule.weight is None or getattr(layer, rule.weight, None) is None:
        return None
    if isinstance(layer, keras.layers.Embedding) and not keras.backend.is_float_dtype(layer.embeddings.dtype):
        return None
    return rule.weight


def weight_status(layer: keras.layers.Layer) -> list[tuple[str, int, str | None]]:
    """(weight name, elements, None if quantized else why float) for every weight of ``layer``."""
    rule = rule_for(layer)
    quantized = quantized_weight(layer)
    floats = dict(rule.floats) if rule else {}
    rows: list[tuple[str, int, str | None]] = []
    for w in layer.weights:
        short = w.path.split("/")[-1]
        elements = int(w.numpy().size)
        if short == quantized:
            rows.append((short, elements, None))
        elif short in floats:
            rows.append((short, elements, floats[short]))
        else:
            rows.append((short, elements, f"{NO_RULE} for {type(layer).__name__}.{short}: stays float"))
    return rows
