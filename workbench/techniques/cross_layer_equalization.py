"""Cross-layer equalization: BN fold + cross-layer scaling + high-bias absorption.

Definitions in docs/techniques.md, section 3 (Nagel et al., ICCV 2019). Ranges are r = max|w| per channel.
- Pair 1→2: s_i = sqrt(r1_i / r2_i) (1 where a range is 0); W1[…, i] /= s_i, b1_i /= s_i,
  W2[…, i, :] *= s_i; both ranges become sqrt(r1_i·r2_i).
- Triplet conv→depthwise→conv: c = cbrt(r1·r2·r3), S12 = r1/c, S23 = c/r3;
  W1, b1 /= S12; depthwise ·= S12/S23, b_dw /= S23; W3[…, i, :] *= S23.
- ReLU6 between scaled layers: ``clip`` replaces it by an exact per-channel clip at 6/s,
  ``relu`` by a ReLU (AIMET TF, changes the function), ``break_chain`` ends the chain there.
- High-bias absorption per link with layer 1's folded BN (γ, β as before folding) over s:
  c = max(0, β/s − 3|γ/s|) through a ReLU (else β/s); b1 −= c; b2 += Σ W2[…, i, o]·c_i.
Everything is planned on the weights and the model is rebuilt once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import keras
import numpy as np

from workbench.graph.flatten import flatten_model
from workbench.graph.functional import FunctionalGraph, activation_name
from workbench.graph.layers import ChannelClip, channel_clip
from workbench.graph.rewrite import GraphEdit, apply_edit
from workbench.options import ReLU6Mode
from workbench.techniques.batch_norm_fold import BNStats, FoldReport, plan_batch_norm_folds

log = logging.getLogger(__name__)
F32 = np.float32
TINY_RANGE = 1e-30  # ranges below this count as zero: no scaling, no NaN/Inf


@dataclass
class Link:
    """Two consecutive layers of a CLS set and what lies between them."""

    first: str
    second: str
    between: list[str]
    activation: str | None  # "relu", "relu6", "prelu" or None
    zero_padding: bool
    scale: np.ndarray | None = None


@dataclass
class CLEReport:
    relu6_mode: str = "clip"
    fold: FoldReport = field(default_factory=FoldReport)
    sets: list[tuple[str, ...]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why it is in no CLS set
    absorbed: dict[str, float] = field(default_factory=dict)  # "first->second" -> mean absorbed bias
    border_links: list[str] = field(default_factory=list)  # absorption inexact at zero-padded borders
    replaced_relu6: list[str] = field(default_factory=list)
    # layer -> (γ, β) of its output pre-activation after scaling and absorption (for analytical BC)
    bn_effective: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "relu6_mode": self.relu6_mode,
            "fold": self.fold.summary(),
            "cls_sets": [list(s) for s in self.sets],
            "skipped": self.skipped,
            "absorbed": self.absorbed,
            "border_links": self.border_links,
            "replaced_relu6": self.replaced_relu6,
            "bn_effective": {k: {"gamma": g.tolist(), "beta": b.tolist()} for k, (g, b) in self.bn_effective.items()},
        }


def _cls_member(layer: keras.layers.Layer) -> str | None:
    """None if the layer can be in a CLS set, else why not."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if layer.depth_multiplier != 1:
            return "depthwise with depth_multiplier > 1"
    elif type(layer) in (keras.layers.Conv2D, keras.layers.Conv1D):
        if layer.groups != 1:
            return "grouped convolution"
    else:
        return "not a Conv1D/Conv2D/DepthwiseConv2D"
    if activation_name(layer) not in ("linear", "relu"):
        return f"fused {activation_name(layer)} activation"
    if layer.data_format != "channels_last":
        return "channels_first"
    return None


def _connector_kind(layer: keras.layers.Layer, relu6_mode: ReLU6Mode) -> str | None:
    """How a layer between two convs behaves under scaling; None ends the chain."""
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return "pad"
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, ChannelClip):
        return "relu6"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
        act = activation_name(layer)
        if act == "relu":
            return "relu"
        if act == "relu6" and relu6_mode is not ReLU6Mode.break_chain:
            return "relu6"
    return None


def _next_link(graph: FunctionalGraph, name: str, dropped: set[str], relu6_mode: ReLU6Mode) -> Link | None:
    between: list[str] = []
    acts: list[str] = []
    pad = False
    current = name
    if activation_name(graph.layer(name)) == "relu":
        acts.append("relu")
    while True:
        nxt = graph.single_consumer(current)
        if nxt is None or nxt in graph.shared:
            return None
        layer = graph.layer(nxt)
        if nxt in dropped:
            current = nxt
            continue
        if _cls_member(layer) is None:
            if len([a for a in acts if a != "pad"]) > 1:
                return None
            return Link(name, nxt, between, next((a for a in acts if a != "pad"), None), pad)
        kind = _connector_kind(layer, relu6_mode)
        if kind is None:
            return None
        between.append(nxt)
        if kind == "pad":
            pad = True
        else:
            acts.append(kind)
        current = nxt


def find_cls_sets(graph: FunctionalGraph, dropped: set[str], relu6_mode: ReLU6Mode) -> tuple[list[list[Link]], dict[str, str]]:
    """Chains of CLS-able layers split into pairs and triplets, in graph order."""
    links: dict[str, Link] = {}
    has_prev: set[str] = set()
    skipped: dict[str, str] = {}
    for name in graph.order:
        layer = graph.layer(name)
        reason = _cls_member(layer)
        if reason is not None:
            if hasattr(layer, "kernel"):
                skipped[name] = reason
            continue
        link = _next_link(graph, name, dropped, relu6_mode)
        if link is not None and link.second not in has_prev:
            links[name] = link
            has_prev.add(link.second)
    sets: list[list[Link]] = []
    for name in graph.order:
        if name not in links or name in has_prev:
            continue
        chain = [links[name]]
        while chain[-1].second in links:
            chain.append(links[chain[-1].second])
        i = 0
        while i < len(chain):
            dw = isinstance(graph.layer(chain[i].second), keras.layers.DepthwiseConv2D)
            if dw and i + 1 < len(chain) and not isinstance(graph.layer(chain[i + 1].second), keras.layers.DepthwiseConv2D):
                sets.append([chain[i], chain[i + 1]])
                i += 2
            else:
                sets.append([chain[i]])
                i += 1
    in_sets = {n for s in sets for link in s for n in (link.first, link.second)}
    for name in graph.order:
        if name not in in_sets and name not in skipped and _cls_member(graph.layer(name)) is None:
            skipped[name] = "no CLS neighbour (Add, Concatenate, pooling, branching or Dense around it)"
    return sets, skipped


def _out_ranges(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    return np.abs(kernel).max(axis=(0, 1, 3)) if depthwise else np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _in_ranges(kernel: np.ndarray) -> np.ndarray:
    # conv (kh, kw, in, out), depthwise (kh, kw, C, 1), Conv1D (k, in, out): the maximum over all but the input axis
    return np.abs(kernel).max(axis=tuple(i for i in range(kernel.ndim) if i != kernel.ndim - 2))


def _along_input(s: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``s`` shaped to scale a kernel's input axis (the second to last)."""
    return s.reshape((1,) * (kernel.ndim - 2) + (-1, 1))


def _safe(num: np.ndarray, den: np.ndarray, power: float) -> np.ndarray:
    """(num/den)^power in float64, 1 wherever a range is (nearly) zero."""
    num, den = num.astype(np.float64), den.astype(np.float64)
    ok = (num > TINY_RANGE) & (den > TINY_RANGE)
    out = np.ones_like(num)
    out[ok] = (num[ok] / den[ok]) ** power
    return out


def _scale_out(edit: GraphEdit, model: keras.Model, name: str, inv: np.ndarray, depthwise: bool) -> None:
    """Divide layer ``name``'s output channels (kernel and bias) by ``inv``."""
    k = edit.kernel(model, name)
    edit.kernels[name] = (k / (inv[None, None, :, None] if depthwise else inv)).astype(F32)
    edit.biases[name] = (edit.bias(model, name) / inv).astype(F32)


def _scale_in(edit: GraphEdit, model: keras.Model, name: str, s: np.ndarray) -> None:
    k = edit.kernel(model, name)
    edit.kernels[name] = (k * _along_input(s, k)).astype(F32)


def scale_cls_set(model: keras.Model, graph: FunctionalGraph, edit: GraphEdit, cls_set: list[Link]) -> None:
    """Apply cross-layer scaling to one pair or triplet; scales are stored on its links."""
    first = cls_set[0].first
    dw_first = isinstance(graph.layer(first), keras.layers.DepthwiseConv2D)
    if len(cls_set) == 1:
        link = cls_set[0]
        r1 = _out_ranges(edit.kernel(model, first), dw_first)
        r2 = _in_ranges(edit.kernel(model, link.second))
        s = _safe(r1, r2, 0.5)
        _scale_out(edit, model, first, s, dw_first)
        _scale_in(edit, model, link.second, s)
        link.scale = s.astype(F32)
        return
    l12, l23 = cls_set
    mid, last = l12.second, l23.second
    r1 = _out_ranges(edit.kernel(model, first), dw_first).astype(np.float64)
    r2 = _out_ranges(edit.kernel(model, mid), True).astype(np.float64)
    r3 = _in_ranges(edit.kernel(model, last)).astype(np.float64)
    ok = (r1 > TINY_RANGE) & (r2 > TINY_RANGE) & (r3 > TINY_RANGE)
    c = np.cbrt(np.where(ok, r1 * r2 * r3, 1.0))
    s12 = np.where(ok, r1 / c, 1.0)
    s23 = np.where(ok, c / np.where(ok, r3, 1.0), 1.0)
    _scale_out(edit, model, first, s12, dw_first)
    k = edit.kernel(model, mid)
    edit.kernels[mid] = (k * (s12 / s23)[None, None, :, None]).astype(F32)
    edit.biases[mid] = (edit.bias(model, mid) / s23).astype(F32)
    _scale_in(edit, model, last, s23)
    l12.scale, l23.scale = s12.astype(F32), s23.astype(F32)


def _relu6_upper(graph: FunctionalGraph, edit: GraphEdit, name: str, channels: int) -> np.ndarray:
    """The current upper clip of a ReLU6-like layer (6 for a ReLU6)."""
    if name in edit.replace:
        return edit.replace[name][1][0]
    layer = graph.layer(name)
    if isinstance(layer, ChannelClip):
        return layer.upper.numpy()
    return np.full(channels, 6.0, F32)


def rewrite_relu6(model: keras.Model, graph: FunctionalGraph, edit: GraphEdit, link: Link, mode: ReLU6Mode) -> list[str]:
    """Replace the ReLU6 of a scaled link: clip at 6/s per channel, or plain ReLU."""
    done = []
    for name in link.between:
        layer = graph.layer(name)
        if _connector_kind(layer, mode) != "relu6":
            continue
        if mode is ReLU6Mode.clip:
            assert link.scale is not None, "a link is scaled before its ReLU6 is rewritten"
            edit.replace[name] = channel_clip(name, (_relu6_upper(graph, edit, name, len(link.scale)) / link.scale).astype(F32))
        else:
            edit.replace[name] = (keras.layers.ReLU(name=name), [])
        done.append(name)
    return done


def absorb_link(model: keras.Model, graph: FunctionalGraph, edit: GraphEdit, link: Link, bn: BNStats) -> np.ndarray | None:
    """High-bias absorption over one link; returns the absorbed bias c or None if not applicable."""
    if link.activation == "prelu" or link.scale is None:
        return None
    gamma, beta = bn.gamma / link.scale, bn.beta / link.scale
    if link.activation is None:
        c = beta
    else:
        c = np.maximum(0.0, beta - 3.0 * np.abs(gamma))
    clip_name = next((n for n in link.between if n in edit.replace and isinstance(edit.replace[n][0], ChannelClip)), None)
    if clip_name is not None:
        upper = edit.replace[clip_name][1][0]
        c = np.minimum(c, upper)
        edit.replace[clip_name] = channel_clip(clip_name, (upper - c).astype(F32))
    c = c.astype(F32)
    edit.biases[link.first] = (edit.bias(model, link.first) - c).astype(F32)
    k2 = edit.kernel(model, link.second)
    if isinstance(graph.layer(link.second), keras.layers.DepthwiseConv2D):
        delta = (k2[..., 0] * c).sum(axis=(0, 1))
    elif k2.ndim == 3:  # Conv1D (k, in, out)
        delta = np.tensordot(c, k2, axes=([0], [1])).sum(axis=0)
    else:
        delta = np.tensordot(c, k2, axes=([0], [2])).sum(axis=(0, 1))
    edit.biases[link.second] = (edit.bias(model, link.second) + delta).astype(F32)
    return c


def _pads_input(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "padding", "valid") in ("same", "causal") and any(k > 1 for k in layer.kernel_size)


def equalize_model(
    model: keras.Model,
    relu6_mode: ReLU6Mode | str = ReLU6Mode.clip,
    high_bias_absorption: bool = True,
    fold: bool = True,
) -> tuple[keras.Model, CLEReport]:
    """BN fold (optional) + cross-layer scaling + high-bias absorption, rebuilt once.

    Returns a new model and a report; the input model is not modified.
    """
    mode = ReLU6Mode(relu6_mode)
    model = flatten_model(model)
    graph = FunctionalGraph.from_model(model)
    edit = GraphEdit()
    report = CLEReport(relu6_mode=mode.value)
    if fold:
        report.fold = plan_batch_norm_folds(model, graph, edit)
    sets, report.skipped = find_cls_sets(graph, edit.drop, mode)
    for cls_set in sets:
        scale_cls_set(model, graph, edit, cls_set)
        report.sets.append((cls_set[0].first, *(link.second for link in cls_set)))
        report.links.extend(cls_set)
        if mode is not ReLU6Mode.break_chain:
            for link in cls_set:
                report.replaced_relu6 += rewrite_relu6(model, graph, edit, link, mode)
    absorbed: dict[str, np.ndarray] = {}
    if high_bias_absorption:
        for cls_set in sets:
            for link in cls_set:
                bn = report.fold.output_bn.get(link.first)
                if bn is None:
                    continue
                c = absorb_link(model, graph, edit, link, bn)
                if c is None:
                    continue
                absorbed[link.first] = c
                key = f"{link.first}->{link.second}"
                report.absorbed[key] = float(np.mean(c))
                if np.any(c != 0) and (link.zero_padding or _pads_input(graph.layer(link.second))):
                    report.border_links.append(key)
    scales = {link.first: link.scale for link in report.links}
    for name, bn in report.fold.output_bn.items():
        s = scales.get(name, np.ones_like(bn.gamma))
        report.bn_effective[name] = ((bn.gamma / s).astype(F32), (bn.beta / s - absorbed.get(name, 0.0)).astype(F32))
    log.info(
        "CLE: %d BNs folded, %d CLS sets, %d links absorbed (%d with zero-padded borders), relu6=%s",
        len(report.fold.folded),
        len(report.sets),
        len(report.absorbed),
        len(report.border_links),
        mode.value,
    )
    return apply_edit(model, edit), report


def cross_layer_scale(model: keras.Model, relu6_mode: ReLU6Mode | str = ReLU6Mode.clip) -> tuple[keras.Model, CLEReport]:
    """Cross-layer scaling alone, on a model whose BNs are already folded."""
    return equalize_model(model, relu6_mode, high_bias_absorption=False, fold=False)
