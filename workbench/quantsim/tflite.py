"""A fully integer TFLite model whose activation ranges come from our encodings.

The float model (weights already on the sim's grid) is rebuilt with TensorFlow's
``fake_quant_with_min_max_args`` at exactly the sim's quantizer positions, holding the sim's
min/max; the TFLite converter honours those ranges (no calibration of its own) and emits int8
activations, int8 weights (its own symmetric scale of the already-quantized kernels) and int32
biases. The LiteRT interpreter (``ai-edge-litert``) then runs it, so the simulation can be
checked against a real integer model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re

import keras
import numpy as np
import tensorflow as tf

from workbench.evaluation.accuracy import Predictions
from workbench.graph.rewrite import clone_layer
from workbench.quantsim.quantizer import FakeQuant, Mode, QuantizedKernel
from workbench.quantsim.sim import QuantizationSimModel, insert_quantizers

log = logging.getLogger(__name__)


class TFLiteConversionError(RuntimeError):
    """The converter refused the model; the message names the layer where it can."""


def _per_tensor_kernel(sim: QuantizationSimModel):
    """A clone function that wraps 8-bit per-tensor quantized weighted layers in a :class:`QuantizedKernel` whose
    range is the sim's (set by :func:`fake_quant_graph`).

    Left alone, the converter quantizes every kernel per output channel with its own scale (max |w| / 127),
    which re-rounds a per-tensor grid; a fake-quant on the kernel makes it keep ours."""
    encodings = sim.param_encodings()

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        enc = encodings.get(layer.name)
        copy = clone_layer(layer)
        plain = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))
        if (
            enc is None
            or enc.num_channels != 1
            or enc.bitwidth != 8
            or not plain
            or getattr(layer, "data_format", "channels_last") != "channels_last"
        ):
            return copy
        return QuantizedKernel(copy, 8, 1, learn_range=False, symmetric=False, narrow_range=enc.steps == 254)

    return clone


def fake_quant_graph(sim: QuantizationSimModel) -> keras.Model:
    """The sim as plain TF ops: quantized kernels as constants, fake-quant at every quantizer."""
    outputs = sim.output_encodings()
    quantizers = {name: FakeQuant(enc.bitwidth, mode=Mode.LEARN, modes=(Mode.LEARN,), name=f"{name}_fq") for name, enc in outputs.items()}
    graph = insert_quantizers(sim.fp_model, quantizers, set(sim.plan.inputs), _per_tensor_kernel(sim))
    for name, q in quantizers.items():  # the sim's ranges, fixed: what the converter reads
        q.set_range(outputs[name].min[0], outputs[name].max[0])
    layers = {layer.name: layer for layer in graph.layers}
    sim_layers = {layer.name: layer for layer in sim.model.layers}
    params = sim.param_encodings()
    for layer in sim.fp_model.layers:
        if not layer.weights:
            continue
        target = layers[layer.name]
        # the sim's layers hold the quantize-dequantized kernels
        (target.inner if isinstance(target, QuantizedKernel) else target).set_weights(sim_layers[layer.name].get_weights())
        if isinstance(target, QuantizedKernel):
            target.quantizer.set_range(params[layer.name].min[0], params[layer.name].max[0])
    return graph


def _layer_in(message: str, names: set[str]) -> str | None:
    """The first model layer named in the converter's op locations ("model_1/<layer>_1/Op@...")."""
    for path in re.findall(r'"([^"@]+/[^"@]+)@', message):
        for segment in path.split("/"):
            for candidate in (segment, re.sub(r"_\d+$", "", segment)):
                if candidate in names:
                    return candidate
    return None


def convert_to_int8_tflite(sim: QuantizationSimModel) -> bytes:
    """Convert the sim to a fully integer TFLite flatbuffer (int8 input and output)."""
    graph = fake_quant_graph(sim)
    converter = tf.lite.TFLiteConverter.from_keras_model(graph)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):  # Keras' export prints every captured tensor's spec
            return converter.convert()
    except Exception as err:  # the converter raises several types, all with the MLIR diagnostics as text
        text = str(err)
        names = {layer.name for layer in sim.fp_model.layers if not isinstance(layer, keras.layers.InputLayer)}
        layer = _layer_in(text, names)
        first = next(
            (line.strip() for line in text.splitlines() if "error" in line.lower()),
            text.strip().splitlines()[0] if text.strip() else type(err).__name__,
        )
        where = f"layer {layer!r}" if layer else "an unidentified layer"
        raise TFLiteConversionError(f"TFLite int8 conversion failed at {where}: {first[:500]}") from err
    finally:
        if chatter.getvalue():
            log.debug("TFLite converter output:\n%s", chatter.getvalue())


def _interpreter(blob: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    return interpreter


def integer_report(blob: bytes) -> dict:
    """Input/output types and how many tensors are float (0 for a fully integer model)."""
    interpreter = _interpreter(blob)
    tensors = interpreter.get_tensor_details()
    floats = [t["name"] for t in tensors if np.dtype(t["dtype"]).kind == "f"]
    return {
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
        "float_tensors": floats,
        "num_tensors": len(tensors),
    }


def evaluate_tflite_top1(blob: bytes, batches: tf.data.Dataset) -> float:
    """Top-1 of an int8 TFLite classifier, quantizing inputs with the model's own input scale."""
    return predict_tflite_classes(blob, batches).top1


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float inputs as the int8 values the sim's input quantizer puts them on: round(x / s) in float32 (half to
    even, as ``FakeQuant``), then the zero point. Rounding x / s + zp instead, or dividing in float64, moves a few
    inputs one step off the sim's grid (0.02 % of the resized digits)."""
    rounded = np.rint(np.asarray(x, np.float32) / np.float32(scale))
    return np.clip(rounded + np.float32(zero_point), -128, 127).astype(np.int8)


class Int8Runner:
    """An int8 TFLite classifier under the LiteRT interpreter: float images in, dequantized logits out.

    Inputs are quantized with the model's own input scale and zero point (an integer input, e.g. token ids, is fed
    as it is); ``lsb`` is the output scale.
    """

    def __init__(self, blob: bytes):
        self.interpreter = _interpreter(blob)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.lsb, self._out_zero = self.output["quantization"]

    def logits(self, x: np.ndarray) -> np.ndarray:
        if tuple(self.input["shape"]) != x.shape:
            self.interpreter.resize_tensor_input(self.input["index"], x.shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
        scale, zero = self.input["quantization"]
        if self.input["dtype"] != np.int8:  # an integer input (token ids) is fed as it is: the model has no input quantizer
            self.interpreter.set_tensor(self.input["index"], np.asarray(x).astype(self.input["dtype"]))
        else:
            self.interpreter.set_tensor(self.input["index"], quantize_input(x, scale, zero))
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        return (raw - self._out_zero) * np.float32(self.lsb)


def predict_tflite_classes(blob: bytes, batches: tf.data.Dataset) -> Predictions:
    """Per-image classes of an int8 TFLite classifier (LiteRT interpreter)."""
    runner = Int8Runner(blob)
    predicted, labels = [], []
    for x, y in batches:
        predicted.append(np.argmax(runner.logits(x.numpy()), axis=-1).astype(np.int32))
        labels.append(y.numpy().astype(np.int32))
    if not labels:
        raise ValueError("evaluation data is empty")
    return Predictions(np.concatenate(predicted), np.concatenate(labels))


def _tensor_of(details: list[dict], layer: str, shape: tuple) -> dict | None:
    """The int8 activation tensor the converter made of ``layer``'s output ("<model>_1/<layer>_1/Op;…"), of the
    sim output's ``shape`` (batch aside): a per-tensor kernel carries the layer's name and one scale too."""
    for suffix in (f"{layer}_fq_1/", f"{layer}_1/"):
        for t in details:
            first = t["name"].split(";")[0]
            if (
                np.dtype(t["dtype"]) == np.int8
                and f"/{suffix}" in f"/{first}"
                and len(t["quantization_parameters"]["scales"]) == 1
                and tuple(t["shape"][1:]) == shape
                and len(t["shape"]) == len(shape) + 1
            ):
                return t
    return None


def tensor_agreement(sim: QuantizationSimModel, blob: bytes, images: np.ndarray) -> list[dict]:
    """Per quantized tensor, in network order: how far the int8 runtime's values are from the sim's, in LSB.

    Runs the LiteRT interpreter with every intermediate tensor kept and the sim's quantizer outputs
    side by side on the same (already float) images; a row per sim quantizer whose tensor the converter
    kept under a recognisable name.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    names = [n for n in sim.graph.order if n in sim.output_quantizers]
    shapes = {n: tuple(int(d) for d in sim.output_quantizers[n].output.shape[1:]) for n in names}
    matched = [(n, t) for n in names if (t := _tensor_of(details, n, shapes[n])) is not None]
    taps = keras.Model(sim.model.inputs, [sim.output_quantizers[n].output for n, _ in matched])
    sim_values = taps.predict(images, batch_size=256, verbose=0)
    sim_values = sim_values if isinstance(sim_values, list) else [sim_values]
    inp = interpreter.get_input_details()[0]
    scale, zero = inp["quantization"]
    diffs: list[list[np.ndarray]] = [[] for _ in matched]
    for i in range(len(images)):
        x = quantize_input(images[i : i + 1], scale, zero)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        for k, (_, t) in enumerate(matched):
            (t_scale,), (t_zero,) = t["quantization_parameters"]["scales"], t["quantization_parameters"]["zero_points"]
            runtime = (interpreter.get_tensor(t["index"]).astype(np.float32) - t_zero) * t_scale
            diffs[k].append(np.abs(runtime - sim_values[k][i : i + 1].reshape(runtime.shape)).ravel() / t_scale)
    rows = []
    for (name, _), d in zip(matched, diffs):
        lsb = np.concatenate(d)
        rows.append(
            {
                "layer": name,
                "type": type(sim.graph.layer(name)).__name__,
                "within 1 LSB %": round(100 * float(np.mean(lsb <= 1.0 + 1e-3)), 2),
                "exact %": round(100 * float(np.mean(lsb <= 1e-3)), 2),
                "worst LSB": round(float(lsb.max()), 1),
            }
        )
    return rows
