"""The quantization simulator: a clone of a Keras model with fake-quant ops.

``QuantizationSimModel(model, settings)`` never mutates ``model``. Its ``.model`` is a
functional clone with a :class:`FakeQuant` after the model inputs and after every
quantized op output; the kernels of its Conv/Depthwise/Dense layers hold their
quantize-dequantized values, computed once when encodings change (not per batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from workbench import interrupts
from workbench.evaluation.steps import batch_step
from workbench.graph.flatten import flatten_model
from workbench.graph.functional import PASSTHROUGH_TYPES, FunctionalGraph, activation_name, fresh_inputs, producer
from workbench.graph.rewrite import clone_layer
from workbench.options import QuantScheme, QuantSettings, Rounding, Target
from workbench.quantsim.analyzers import EncodingAnalyzer, compute_tensor_encoding
from workbench.quantsim.encodings import F32, Encoding, quantize_dequantize
from workbench.quantsim.placement import QuantizerPlan, plan_quantizers
from workbench.quantsim.quantizer import FakeQuant, Mode
from workbench.quantsim.rules import channels_last, from_channels_last, quantized_weight, rule_for
from workbench.quantsim.runtime import KERNELS, IntegerActivation, activation_table

QUANTIZER_SUFFIX = "_quant"
# TFLite int8 kernels with a fixed output grid: activation → (scale, offset), real = scale·(q + offset), q ∈ [0, 255]
FIXED_OUTPUT_GRIDS = {"softmax": (1 / 256, 0), "sigmoid": (1 / 256, 0), "tanh": (1 / 128, -128)}
# TFLite int8 kernels whose output keeps the input's scale and zero point
SAME_SCALE_TYPES = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclass
class ParamQuantizer:
    """Quantizer of one layer's weight (``quantsim.rules``): the float tensor, its encoding and channel layout."""

    layer_name: str
    float_kernel: np.ndarray
    channel_axis: int | str = -1  # the output-channel axis, or "depthwise" (the last two axes, C·M)
    encoding: Encoding | None = None
    enabled: bool = True
    float_bias: np.ndarray | None = None
    bitwidth: int = 8
    weight: str = "kernel"  # the layer attribute that holds it (kernel, embeddings)

    @property
    def depthwise(self) -> bool:
        return self.channel_axis == "depthwise"

    @property
    def tensor_name(self) -> str:
        return f"{self.layer_name}/{self.weight}:0"

    def channel_view(self) -> np.ndarray:
        """The weight with output channels on the last axis (depthwise: C·M flattened; transposed convs: axis −2 moved)."""
        return channels_last(self.float_kernel, self.channel_axis)

    def from_channel_view(self, view: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`channel_view`: a tensor of the weight's own shape."""
        return from_channels_last(view, self.channel_axis, self.float_kernel.shape)

    def variable(self, layer: keras.layers.Layer):
        """The variable of ``layer`` (the sim's copy) that holds this weight."""
        return getattr(layer, self.weight)

    def quantized_kernel(self, rounding: Rounding, rng: np.random.Generator, encoding: Encoding | None = None) -> np.ndarray:
        """The kernel on its grid (``encoding`` instead of its own when given)."""
        encoding = encoding if encoding is not None else self.encoding
        if encoding is None or not self.enabled:
            return self.float_kernel
        q = quantize_dequantize(self.channel_view(), encoding, -1, rounding is Rounding.stochastic, rng)
        return self.from_channel_view(q)


def _copy_weights(src: keras.Model, dst: keras.Model) -> None:
    targets = {layer.name: layer for layer in dst.layers}
    for layer in src.layers:
        if layer.weights:
            targets[layer.name].set_weights(layer.get_weights())


def insert_quantizers(
    model: keras.Model,
    quantizers: dict[str, keras.layers.Layer],
    input_names: set[str],
    clone_function: Callable[[keras.layers.Layer], keras.layers.Layer],
) -> keras.Model:
    """Clone ``model`` with ``quantizers[name]`` after each named layer's output and model input."""
    cache: dict[int, Any] = {}

    def quantize_inputs(tensor):
        op = producer(tensor)
        if op is None or not isinstance(op, keras.layers.InputLayer):
            return tensor
        name = op.name
        if name not in input_names:
            return tensor
        if id(tensor) not in cache:
            cache[id(tensor)] = quantizers[name](tensor)
        return cache[id(tensor)]

    def call_function(layer, *args, **kwargs):
        args = keras.tree.map_structure(quantize_inputs, args)
        out = layer(*args, **kwargs)
        if layer.name in quantizers:
            out = quantizers[layer.name](out)
        return out

    inputs = fresh_inputs(model)
    return keras.models.clone_model(
        model, input_tensors=inputs if len(inputs) > 1 else inputs[0], clone_function=clone_function, call_function=call_function
    )


class QuantizationSimModel:
    """Quantization simulation of a functional Keras model (AIMET's ``QuantizationSimModel``)."""

    def __init__(self, model: keras.Model, settings: QuantSettings | None = None, excluded_layers: Iterable[str] = ()):
        self.settings = settings or QuantSettings()
        model = flatten_model(model)  # nested models and Sequentials become one graph first
        self.fp_model = model
        self.graph = FunctionalGraph.from_model(model)
        self.excluded_layers = frozenset(excluded_layers)
        unknown = self.excluded_layers - set(self.graph.order)
        if unknown:
            raise ValueError(f"excluded layers not in the model: {sorted(unknown)}")
        # layers that quant.overrides leaves float are excluded like any other
        for override in self.settings.overrides:
            if not any(override.matches(n) for n in self.graph.order):
                raise ValueError(f"quant.overrides: {override.pattern!r} matches no layer of the model")
        disabled = {n for n in self.graph.order if not self.settings.quantized(n)}
        self.plan: QuantizerPlan = plan_quantizers(self.graph, self.excluded_layers | disabled)
        for name in disabled & set(self.plan.skipped):
            self.plan.skipped[name] = "left float by quant.overrides"
        self._rng = np.random.default_rng(self.settings.seed)
        s = self.settings
        self.output_quantizers: dict[str, FakeQuant] = {}
        for i, name in enumerate(self.plan.inputs + self.plan.outputs):
            self.output_quantizers[name] = FakeQuant(
                s.output_bw_for(name), s.output_symmetric, s.rounding.value, s.seed + i, name=f"{name}{QUANTIZER_SUFFIX}"
            )
        # target tflite: activations whose int8 kernel is not the float formula (hard-swish), read from a table
        self.integer_activations: dict[str, IntegerActivation] = {}
        self._tables: set[str] = set()  # those with a table loaded (both their grids known)
        self.model = self._build()
        self.analyzers: dict[str, EncodingAnalyzer] = {}  # the last calibration's statistics, by layer
        # the sim model's layers by name (original names; quantizers carry a suffix)
        self.layers_by_name = {layer.name: layer for layer in self.model.layers}
        self.param_quantizers: dict[str, ParamQuantizer] = {}
        for name in self.plan.params:
            layer = self.graph.layer(name)
            bias = getattr(layer, "bias", None)
            rule, weight = rule_for(layer), quantized_weight(layer)
            assert rule is not None and weight is not None
            self.param_quantizers[name] = ParamQuantizer(
                name,
                np.asarray(getattr(layer, weight).numpy(), dtype=F32),
                rule.channel_axis,
                float_bias=None if bias is None else np.asarray(bias.numpy(), dtype=F32),
                bitwidth=s.param_bw_for(name),
                weight=weight,
            )

    # ----------------------------------------------------------------- building
    def _build(self) -> keras.Model:
        def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
            name = activation_name(layer)
            if self.settings.target is Target.tflite and isinstance(layer, keras.layers.Activation) and name in KERNELS:
                self.integer_activations[layer.name] = IntegerActivation(name, name=layer.name)
                return self.integer_activations[layer.name]
            return clone_layer(layer)

        sim = insert_quantizers(self.fp_model, self.output_quantizers, set(self.plan.inputs), clone)
        _copy_weights(self.fp_model, sim)
        return sim

    # ----------------------------------------------------------------- modes
    def _set_mode(self, mode: Mode) -> None:
        """Every output quantizer to ``mode``: a variable each, so traced steps need no retracing."""
        for q in self.output_quantizers.values():
            q.set_mode(mode)
        for name, layer in self.integer_activations.items():
            layer.switch(mode is Mode.QUANTIZE and name in self._tables)

    def _drop_traced_steps(self) -> None:
        """Calibration adds the analyzers' update ops to the graph and takes them out again: the one change a
        variable cannot make, so Keras' cached step functions (a callback may call ``model.predict``) are
        dropped when it starts and ends."""
        for attr in ("predict_function", "test_function", "train_function"):
            if hasattr(self.model, attr):
                setattr(self.model, attr, None)

    def _apply_param_quantization(self) -> None:
        for name, pq in self.param_quantizers.items():
            pq.variable(self.layers_by_name[name]).assign(pq.quantized_kernel(self.settings.rounding, self._rng))

    # ----------------------------------------------------------------- encodings
    def param_encoding_at(self, name: str, bitwidth: int) -> Encoding:
        """The weight encoding ``name`` would have at ``bitwidth`` (the param scheme on its float kernel)."""
        s = self.settings
        return compute_tensor_encoding(
            self.param_quantizers[name].channel_view(),
            s.param_scheme,
            bitwidth,
            s.param_symmetric,
            channel_axis=-1 if s.per_channel else None,
            strict=s.strict_symmetric,
            unsigned=s.unsigned_symmetric,
            percentile=s.percentile,
        )

    def compute_param_encodings(self, frozen: dict[str, Encoding] | None = None) -> None:
        """Weight encodings from the kernels (the param scheme); names in ``frozen`` keep the given grid."""
        frozen = frozen or {}
        unknown = set(frozen) - set(self.param_quantizers)
        if unknown:
            raise ValueError(f"frozen param encodings for layers the sim does not quantize: {sorted(unknown)}")
        for name, pq in self.param_quantizers.items():
            if name in frozen:
                pq.encoding = frozen[name]
                continue
            pq.encoding = self.param_encoding_at(name, pq.bitwidth)
        self._apply_param_quantization()

    def compute_encodings(
        self,
        forward_pass_callback: Callable[[keras.Model, Any], Any],
        forward_pass_args: Any = None,
        param_encodings: dict[str, Encoding] | None = None,
        also: Iterable[QuantScheme] = (),
    ) -> None:
        """Param encodings from the kernels (or ``param_encodings``, frozen, e.g. AdaRound's), then
        activation encodings from a calibration pass.

        During the pass the weights are already quantized and every activation quantizer
        passes its input through while its analyzer collects statistics. ``also``: other output schemes
        whose statistics the same pass collects, for :meth:`use_output_scheme` (a scheme search).
        """
        s = self.settings
        self.compute_param_encodings(param_encodings)
        for q in self.output_quantizers.values():
            q.start_calibration(
                EncodingAnalyzer(
                    s.output_scheme, q.bitwidth, s.output_symmetric, 1, s.strict_symmetric, s.unsigned_symmetric, s.percentile, also
                )
            )
        self._drop_traced_steps()
        try:
            forward_pass_callback(self.model, forward_pass_args)
        finally:
            self._set_mode(Mode.PASSTHROUGH)
            analyzers = {name: q.finish_calibration() for name, q in self.output_quantizers.items()}
            self._drop_traced_steps()
        # kept: encodings at other bitwidths come from the same statistics (mixed precision)
        self.analyzers = analyzers
        self._set_output_encodings()

    def _set_output_encodings(self) -> None:
        for name, q in self.output_quantizers.items():
            try:
                q.set_encoding(self.analyzers[name].compute_encoding())
            except RuntimeError as err:
                raise RuntimeError(f"output quantizer of {name!r}: {err}") from None
        if self.settings.target is Target.tflite:
            self._apply_runtime_rules()
        self._set_mode(Mode.QUANTIZE)

    def use_output_scheme(self, scheme: QuantScheme, percentile: float) -> None:
        """Activation encodings by another scheme, from the last calibration's statistics (collected for it with
        ``compute_encodings(also=...)``): the sim is then the one calibrated with that scheme, bit for bit."""
        s = self.settings
        if s.param_scheme is QuantScheme.percentile and percentile != s.percentile:
            raise ValueError("the weights' percentile scheme shares quant.percentile: their grids would change too")
        for analyzer in self.analyzers.values():
            analyzer.select(scheme, percentile)
        self.settings = replace(s, output_scheme=QuantScheme(scheme), percentile=percentile)
        self._set_output_encodings()

    # ----------------------------------------------------------------- TFLite target
    def input_quantizer(self, layer_name: str) -> str | None:
        """The layer whose output quantizer feeds ``layer_name`` (through ops that only move data), or None."""
        parents = self.graph.producers.get(layer_name, [])
        while len(parents) == 1:
            parent = parents[0]
            if parent in self.output_quantizers:
                return parent
            if not isinstance(self.graph.layer(parent), PASSTHROUGH_TYPES):
                return None
            parents = self.graph.producers.get(parent, [])
        return None

    def input_encoding(self, layer_name: str) -> Encoding | None:
        """The encoding of the tensor that ``layer_name`` reads (through ops that only move data)."""
        source = self.input_quantizer(layer_name)
        return None if source is None else getattr(self.output_quantizers[source], "encoding", None)

    def _apply_runtime_rules(self) -> None:
        """What the TFLite int8 runtime imposes on top of calibrated encodings (``target=tflite``).

        Fixed output grids for softmax/logistic (1/256, from 0) and tanh (1/128, symmetric); max and
        average pooling keep their input's grid; biases on the int32 grid of input scale × weight scale; the integer
        kernels that are not the float formula (hard-swish) as tables of their 256 results.
        """
        for name, q in self.output_quantizers.items():
            if name in self.plan.inputs:
                continue
            layer = self.graph.layer(name)
            fixed = FIXED_OUTPUT_GRIDS.get(activation_name(layer) or "")
            if fixed is not None:
                q.set_encoding(Encoding(8, 255, fixed[1] != 0, np.array([fixed[0]], F32), np.array([fixed[1]], F32)))
            elif isinstance(layer, SAME_SCALE_TYPES):
                enc = self.input_encoding(name)
                if enc is not None:
                    q.set_encoding(enc)
        self._apply_bias_quantization()
        self._load_integer_tables()

    def _load_integer_tables(self) -> None:
        """Each integer activation's table from its input and output grids (``quantsim.runtime``); one whose grids
        are not both 8-bit per-tensor keeps the float formula, as the runtime then computes it in float."""
        self._tables = set()
        for name, layer in self.integer_activations.items():
            source, output = self.input_encoding(name), getattr(self.output_quantizers.get(name), "encoding", None)
            if source is None or output is None:
                continue
            table = activation_table(layer.activation_name, source, output)
            if table is not None:
                layer.load(source, table)
                self._tables.add(name)

    def _apply_bias_quantization(self) -> None:
        for name, pq in self.param_quantizers.items():
            layer = self.layers_by_name[name]
            if pq.float_bias is None or pq.encoding is None or not pq.enabled:
                continue
            source = self.input_encoding(name)
            if source is None:
                continue
            bias_scale = (F32(source.scale[0]) * pq.encoding.scale).astype(F32)
            q = np.clip(np.round(pq.float_bias / bias_scale), -(2.0**31), 2.0**31 - 1)
            layer.bias.assign((q * bias_scale).astype(F32))

    def set_encodings(self, params: dict[str, Encoding], outputs: dict[str, Encoding]) -> None:
        """Load encodings (e.g. from an exported JSON) by layer name."""
        for name, enc in params.items():
            self.param_quantizers[name].encoding = enc
        self._apply_param_quantization()
        for name, enc in outputs.items():
            self.output_quantizers[name].set_encoding(enc)
        if self.settings.target is Target.tflite:
            self._apply_bias_quantization()
            self._load_integer_tables()
        self._set_mode(Mode.QUANTIZE)

    @contextlib.contextmanager
    def switchable(self) -> Iterator[Callable[[set[str], set[str]], None]]:
        """Within the block, ``enable(params, outputs)`` turns on exactly the named weight and output
        quantizers, without retracing the model (output quantizers switch their mode variable, kernels are
        reassigned). Afterwards every quantizer is on again."""
        quantized = {name: pq.variable(self.layers_by_name[name]).numpy() for name, pq in self.param_quantizers.items()}

        def enable(params: set[str], outputs: set[str]) -> None:
            for name, pq in self.param_quantizers.items():
                pq.variable(self.layers_by_name[name]).assign(quantized[name] if name in params else pq.float_kernel)
            for name, q in self.output_quantizers.items():
                q.set_mode(Mode.QUANTIZE if name in outputs else Mode.PASSTHROUGH)
            for name, layer in self.integer_activations.items():  # the table needs both of its grids
                layer.switch(name in self._tables and name in outputs and self.input_quantizer(name) in outputs)

        try:
            yield enable
        finally:
            for name, kernel in quantized.items():
                self.param_quantizers[name].variable(self.layers_by_name[name]).assign(kernel)
            self._set_mode(Mode.QUANTIZE)

    def param_encodings(self) -> dict[str, Encoding]:
        return {n: pq.encoding for n, pq in self.param_quantizers.items() if pq.encoding is not None}

    def output_encodings(self) -> dict[str, Encoding]:
        return {n: q.encoding for n, q in self.output_quantizers.items() if getattr(q, "encoding", None) is not None}

    def quantized_output(self, layer_name: str):
        """The sim tensor that carries ``layer_name``'s (possibly quantized) output."""
        if layer_name in self.output_quantizers:
            return self.output_quantizers[layer_name].output
        return self.layers_by_name[layer_name].output


def batch_inputs(batch: Any) -> Any:
    """The model inputs of a batch: a tuple is ``(x, y[, weights])``; a list or dict is the inputs of a
    multi-input model (``[x1, x2]``, ``{"left": x1, ...}``); anything else is ``x`` itself."""
    return batch[0] if isinstance(batch, tuple) else batch


def forward_pass_over(batches: Iterable, counter: list[int] | None = None) -> Callable[[keras.Model, Any], None]:
    """A calibration callback that runs the model over ``(x, y)``, ``x`` or (several inputs) ``[x1, x2]`` batches,
    as one traced step.

    ``counter`` (a one-element list), when given, receives the number of samples that went through.
    """

    def callback(model: keras.Model, _args: Any = None) -> None:
        step = batch_step(lambda x: model(x, training=False))
        for batch in tqdm(batches, desc="calibration", unit="batch", disable=None, leave=False):
            interrupts.checkpoint()
            x = batch_inputs(batch)
            step(x)
            if counter is not None:
                counter[0] += int(keras.tree.flatten(x)[0].shape[0])

    return callback
