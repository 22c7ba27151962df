"""The stage registry: every stage declared once, as one :class:`Stage` record.

Everything else that names stages is derived from it: the allowed ``stage.name`` / ``pipeline.stages`` values,
``--help``, the ``+stage=NAME`` choice of a stage without a YAML file, the report's stage order and which option
groups identify a stage's setting, which stages are diagnostics (never "the best technique") and which train
(their training split is logged as a dataset). ``tests/test_stage_registry.py`` checks each derivation.

A stage's function is named as ``module:function`` and imported only when the stage runs (stages pull in
TensorFlow; the registry is read before it, by the config checks and the reports). Stages from other packages
declare their records under the ``workbench.stages`` entry-point group (``[project.entry-points."workbench.stages"]``
in their ``pyproject.toml``: ``name = "package.module:STAGE"``); they are read on first use.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "workbench.stages"


class Role(str, Enum):
    REFERENCE = "reference"  # the deployable baseline every other stage is compared with
    TECHNIQUE = "technique"  # a technique that wins accuracy back: compared with the reference, can be "the best"
    DIAGNOSTIC = "diagnostic"  # measured and reported, never "the best technique" (its sim is another stage's)


@dataclass(frozen=True)
class Stage:
    """One stage: what runs it, what it is for, and which option groups change its result."""

    name: str
    run: str  # "module:function", called with (StageContext, StageResult)
    help: str  # its line in --help
    role: Role = Role.TECHNIQUE
    options: tuple[str, ...] = ()  # config nodes (cle, bc, ...) whose keys change its result: its identity in reports
    trains: bool = False  # fine-tunes on the training split (logged as the run's training dataset)
    # a plug-in's own options: a dataclass composed as the config node of the stage's name (``+stage=NAME
    # NAME.key=value``), defaults written there, read by the stage as ``ctx.options(NAME)``
    schema: type | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        """The config nodes whose keys change its result: ``options``, and its own node if it has a schema."""
        return (*self.options, self.name) if self.schema is not None else self.options

    def function(self) -> Callable[..., Any]:
        module, _, attribute = self.run.partition(":")
        return getattr(importlib.import_module(module), attribute)


BUILT_IN = (
    Stage(
        "baseline",
        "workbench.stages.baseline:run_baseline",
        "the deployable baseline: BN folded, calibrated quantsim",
        Role.REFERENCE,
        ("baseline",),
    ),
    Stage("bn_fold", "workbench.stages.bn_fold:run_bn_fold", "the folded model plus the fold diagnostics", Role.DIAGNOSTIC),
    Stage("cle", "workbench.stages.cle:run_cle", "BN fold + cross-layer equalization", options=("cle",)),
    Stage("bc", "workbench.stages.bc:run_bc", "BN fold + CLE + bias correction", options=("cle", "bc")),
    Stage(
        "adaround",
        "workbench.stages.adaround:run_adaround",
        "BN fold + CLE + AdaRound (learned weight rounding)",
        options=("cle", "adaround"),
    ),
    Stage(
        "qat",
        "workbench.stages.qat:run_qat",
        "BN fold + CLE + quantization-aware training with range learning",
        options=("cle", "qat"),
        trains=True,
    ),
    Stage(
        "mixed_precision",
        "workbench.stages.mixed_precision:run_mixed_precision",
        "per-layer bitwidths from a BitOps/accuracy Pareto front (AMP)",
        options=("cle", "amp"),
    ),
    Stage(
        "autoquant",
        "workbench.stages.autoquant:run_autoquant",
        "which technique reaches the target: schemes, CLE, BC, AdaRound (QAT) in order, judged on held-out images",
        options=("cle", "bc", "adaround", "qat", "autoquant"),
    ),
    Stage(
        "analyze",
        "workbench.stages.analyze:run_analyze",
        "per-layer sensitivity and ranges (AIMET's QuantAnalyzer)",
        Role.DIAGNOSTIC,
        ("cle", "analyze"),
    ),
)


def _plugins() -> list[Stage]:
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            record = point.load()
        except Exception as err:  # a broken plug-in costs its stage, not the workbench
            log.warning("stage plug-in %s (%s) cannot be loaded: %s", point.name, point.value, err)
            continue
        if not isinstance(record, Stage):
            log.warning("stage plug-in %s (%s) is not a workbench.registry.Stage record", point.name, point.value)
            continue
        found.append(record)
    return found


@cache
def stages() -> dict[str, Stage]:
    """Every stage by name: the built-in ones in report and pipeline order, then the plug-ins'."""
    table: dict[str, Stage] = {}
    for record in (*BUILT_IN, *_plugins()):
        if record.name in table:
            log.warning("stage %s is declared twice: the first declaration (%s) is kept", record.name, table[record.name].run)
            continue
        table[record.name] = record
    return table


def stage_names() -> tuple[str, ...]:
    return tuple(stages())


def get(name: str) -> Stage:
    """The record of ``name``; a one-line error naming the allowed ones otherwise."""
    table = stages()
    if name not in table:
        raise ValueError(f"stage.name={name!r} is not allowed; allowed: {', '.join(table)}")
    return table[name]


def option_groups() -> tuple[str, ...]:
    """Every config node some stage reads: keys outside them apply to every stage."""
    return tuple(dict.fromkeys(group for record in stages().values() for group in record.groups))


def with_role(role: Role) -> tuple[str, ...]:
    return tuple(name for name, record in stages().items() if record.role is role)


def training_stages() -> tuple[str, ...]:
    return tuple(name for name, record in stages().items() if record.trains)
