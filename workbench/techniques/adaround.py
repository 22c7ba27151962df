"""AdaRound: learn, layer by layer, whether each weight rounds up or down (Nagel et al., ICML 2020).

For every Conv2D / DepthwiseConv2D / Dense layer in topological order, with its weight encoding
computed first (the param scheme) and then frozen: a continuous V per weight, the rectified sigmoid
h(V) = clip(sigmoid(V)·(ζ − γ) + γ, 0, 1) (ζ = 1.1, γ = −0.1) initialised to the fractional part of
w/Δ, the soft kernel Δ·clip(floor(w/Δ) + h(V), o, o + steps), and the loss

    ‖W·x − W̃·x̃‖² (sum over output channels, mean over samples and positions) + λ·Σ (1 − |2h(V) − 1|^β)

with x the layer's FP32 input and x̃ its input in the model whose earlier layers are already rounded
(AIMET's default; or x itself), the target the FP32 pre-activation output, β annealed from 20 to 2 by a
cosine after a warm start (regulariser off) of 20 % of the iterations, Adam. Afterwards each weight is
rounded up where h(V) ≥ 0.5: the kernel sits exactly on the frozen grid. docs/techniques.md, section 7.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from workbench.graph.execute import run_side_by_side
from workbench.graph.flatten import flatten_model
from workbench.graph.layers import pre_activation
from workbench.graph.rewrite import GraphEdit, apply_edit
from workbench.options import AdaroundParameters, QuantSettings
from workbench.quantsim.encodings import F32, Encoding
from workbench.quantsim.sim import ParamQuantizer, QuantizationSimModel

ZETA, GAMMA = 1.1, -0.1
LOSS_SAMPLES = 256  # samples the before/after reconstruction losses are measured on


ADAROUND_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def rectified_sigmoid(v):
    """h(V) = clip(sigmoid(V)·(ζ − γ) + γ, 0, 1)."""
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_v(rest: np.ndarray) -> np.ndarray:
    """V with h(V) = ``rest`` (the fractional part of w/Δ, in [0, 1))."""
    return (-np.log((ZETA - GAMMA) / (rest.astype(np.float64) - GAMMA) - 1.0)).astype(F32)


def rounding_regularizer(h, beta):
    """Σ (1 − |2h − 1|^β): 0 when every h is 0 or 1, largest at h = 0.5."""
    return tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))


def beta_at(iteration, iterations: int, warm_start: float, beta_range: tuple[float, float]):
    """β after the warm start: cosine from beta_range[0] down to beta_range[1]."""
    start, end = (float(b) for b in beta_range)
    warm = warm_start * iterations
    progress = tf.clip_by_value((tf.cast(iteration, tf.float32) - warm) / max(iterations - warm, 1.0), 0.0, 1.0)
    return end + 0.5 * (start - end) * (1.0 + tf.cos(progress * np.pi))


def reconstruction_loss(output, target):
    """Squared error summed over output channels, averaged over samples and positions (AIMET's)."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(output - target), axis=-1))


@dataclass
class AdaroundReport:
    """Per layer: reconstruction loss with round-to-nearest and with AdaRound, flips, seconds."""

    layers: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # quantized layers left at round-to-nearest, with why

    @property
    def mean_flip_fraction(self) -> float:
        return float(np.mean([row["flip_fraction"] for row in self.layers])) if self.layers else 0.0

    @property
    def seconds(self) -> float:
        return float(sum(row["seconds"] for row in self.layers))


def _grid(pq: ParamQuantizer) -> tuple[np.ndarray, np.ndarray, np.ndarray, Encoding]:
    """Per channel of the kernel's channel view: scale, lowest and highest integer level."""
    enc = pq.encoding
    assert enc is not None
    return enc.scale.astype(F32), enc.offset.astype(F32), (enc.offset + F32(enc.steps)).astype(F32), enc


def adaround_kernel(
    layer: keras.layers.Layer, pq: ParamQuantizer, inputs: tf.Tensor, target: tf.Tensor, params: AdaroundParameters
) -> tuple[np.ndarray, dict]:
    """The AdaRounded kernel of one layer (on its frozen grid) and its report row."""
    start = time.perf_counter()
    scale, low, high, _ = _grid(pq)
    view = pq.channel_view()
    divided = view / scale
    floor = np.floor(divided).astype(F32)
    nearest = np.clip(np.round(divided), low, high).astype(F32)
    v = tf.Variable(initial_v(divided - floor), trainable=True)
    shape = pq.float_kernel.shape
    floor_t, scale_t, low_t, high_t = (tf.constant(a) for a in (floor, scale, low, high))
    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate)
    optimizer.build([v])
    iterations, count = int(params.num_iterations), int(inputs.shape[0])
    batch = min(int(params.batch_size), count)
    warm = float(params.default_warm_start) * iterations
    reg_param = float(params.default_reg_param)

    def kernel_of(levels):
        return tf.reshape(tf.clip_by_value(levels, low_t, high_t) * scale_t, shape)

    @tf.function(autograph=True, reduce_retracing=True)
    def optimize(x, y):
        for t in tf.range(iterations):
            idx = tf.random.stateless_uniform([batch], seed=[params.seed, t], minval=0, maxval=count, dtype=tf.int32)
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                h = rectified_sigmoid(v)
                loss = reconstruction_loss(pre_activation(layer, xb, kernel_of(floor_t + h)), yb)
                regularized = tf.cast(t, tf.float32) >= warm
                beta = beta_at(t, iterations, params.default_warm_start, params.default_beta_range)
                loss += tf.where(regularized, reg_param * rounding_regularizer(h, beta), 0.0)
            optimizer.apply_gradients([(tape.gradient(loss, v), v)])

    optimize(inputs, target)
    up = tf.cast(rectified_sigmoid(v) >= 0.5, tf.float32)
    levels = np.clip(floor + up.numpy(), low, high).astype(F32)
    kernel = (levels * scale).astype(F32).reshape(shape)
    x_eval, y_eval = inputs[:LOSS_SAMPLES], target[:LOSS_SAMPLES]
    row = {
        "layer": pq.layer_name,
        "loss_nearest": float(reconstruction_loss(pre_activation(layer, x_eval, kernel_of(tf.constant(nearest))), y_eval)),
        "loss_adaround": float(reconstruction_loss(pre_activation(layer, x_eval, tf.constant(kernel)), y_eval)),
        "flip_fraction": float(np.mean(levels != nearest)),
        "weights": int(levels.size),
        "seconds": time.perf_counter() - start,
    }
    return kernel, row


def apply_adaround(
    model: keras.Model, settings: QuantSettings, samples: np.ndarray, params: AdaroundParameters | None = None
) -> tuple[keras.Model, dict[str, Encoding], AdaroundReport]:
    """AdaRound every quantized kernel of ``model`` (a functional Keras model, BN folded as a rule).

    Returns a new model whose kernels sit on their weight grids, those grids (frozen: pass them to
    ``QuantizationSimModel.compute_encodings(..., param_encodings=...)``) and a per-layer report.
    ``samples`` are the calibration images (``num_batches · batch_size`` of them are used).
    """
    params = params or AdaroundParameters()
    model = flatten_model(model)
    samples = np.asarray(samples, F32)[: params.num_batches * params.batch_size]
    if len(samples) == 0:
        raise ValueError("AdaRound needs calibration samples: none were given")
    sim = QuantizationSimModel(model, settings)
    sim.compute_param_encodings()  # frozen from here on; the sim's layers hold round-to-nearest kernels
    kernels: dict[str, np.ndarray] = {}
    report = AdaroundReport()

    def before(name: str, x_fp: tf.Tensor, x_rounded: tf.Tensor) -> None:
        pq = sim.param_quantizers.get(name)
        if pq is None or pq.encoding is None or not pq.enabled:
            return
        layer = sim.graph.layer(name)
        if type(layer) not in ADAROUND_TYPES:
            return  # named in the report below
        target = pre_activation(layer, x_fp, tf.constant(pq.float_kernel))
        kernel, row = adaround_kernel(layer, pq, x_rounded if params.quantized_input else x_fp, target, params)
        sim.layers_by_name[name].kernel.assign(kernel)  # the rounded stream goes on with it
        kernels[name] = kernel
        report.layers.append(row)

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # one traced optimisation per layer is by design: TF's retracing warning is noise here
    try:
        run_side_by_side(model, samples, samples, sim.layers_by_name, lambda *_: None, before=before, progress="AdaRound")
    finally:
        logger.setLevel(level)
    kinds = ", ".join(t.__name__ for t in ADAROUND_TYPES)
    for name in sim.param_quantizers:
        if name not in kernels and name not in report.skipped:
            report.skipped[name] = f"round to nearest: AdaRound optimizes {kinds} kernels"
    return apply_edit(model, GraphEdit(kernels=kernels)), sim.param_encodings(), report
