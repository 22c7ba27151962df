"""Stage ``autoquant``: which technique reaches the accuracy target, chosen on one part of the validation split and
judged once on the other.

The validation split is divided by a seeded draw (``autoquant.search_fraction``) into *search* images, on which
every decision is made, and *held-out* images, on which only the final choice is evaluated. On the search images,
in AIMET AutoQuant's order, each step runs an existing stage (through the registry: no second implementation) and
the search stops at the first whose sim top-1 is within ``autoquant.allowed_accuracy_drop`` of FP32's:

1. the deployable baseline (BN folded) at the configured setting;
2. scheme selection: the baseline under each ``autoquant.schemes`` pair; the best is kept for what follows;
3. the weights-in-float check (weight quantizers off): if even then the target is missed, activation quantization is the
   problem and the search stops there, saying so;
4. ``cle``, 5. ``bc``, 6. ``adaround``, 7. ``mixed_precision`` (over ``autoquant.candidates``), 8. ``qat`` (only
   with ``autoquant.allow_training``): each kept when it beats the best so far.

The run reports the choice evaluated on the held-out images (``sim/top1``, ``fp32/top1``, ``eval.digest``), its
McNemar test against the configured baseline on the same held-out images, the search figure beside it
(``autoquant/search_top1``) so that the selection's optimism is visible, the decision path (``autoquant_steps.csv``
and the run's description) and the recipe that reruns the choice (``autoquant_recipe.yaml``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import yaml

from workbench import keys, registry
from workbench.config.schema import parse_scheme_pair
from workbench.evaluation.accuracy import predict_classes
from workbench.evaluation.statistics import PairedComparison, mcnemar_exact
from workbench.options import QuantScheme, QuantSettings
from workbench.quantsim.sim import QuantizationSimModel
from workbench.results import StageResult
from workbench.stages.common import evaluate_sim, export_sim, record_accuracy, record_layers, single_input_only, single_output_only
from workbench.stages.context import StageContext
from workbench.stages.tflite_check import check_tflite

log = logging.getLogger(__name__)

# what a step's own evaluation wrote: replaced by the held-out evaluation of the choice
EVALUATION_KEYS = (keys.FP32_TOP1, keys.SIM_TOP1, keys.EVAL_SAMPLES, keys.SIM_DROP, keys.TRANSFORMED_TOP1)


@dataclass
class Trial:
    step: str  # what the search tried: baseline, schemes, weights_float, cle, bc, adaround, qat
    stage: str  # the stage that computed it (its recipe)
    settings: QuantSettings
    top1: float  # on the search images
    result: StageResult
    kept: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # the stage's option nodes it ran with (its recipe)

    def activate(self) -> QuantizationSimModel:
        """The trial's sim at its own output scheme (the scheme trials of one weight scheme share one calibration)."""
        sim = self.result.sim
        assert sim is not None, f"{self.step}: its sim was let go"
        s = self.settings
        if (sim.settings.output_scheme, sim.settings.percentile) != (s.output_scheme, s.percentile):
            sim.use_output_scheme(s.output_scheme, s.percentile)
        return sim

    @property
    def schemes(self) -> str:
        s = self.settings
        text = f"{s.param_scheme.value}/{s.output_scheme.value}"
        return text + (f" p{s.percentile:g}" if QuantScheme.percentile in (s.param_scheme, s.output_scheme) else "")


class Budget:
    def __init__(self, max_trials: int | None, max_minutes: float | None):
        self.max_trials, self.deadline = max_trials, (time.monotonic() + 60 * max_minutes) if max_minutes else None
        self.trials = 0

    def spent(self) -> str | None:
        if self.max_trials is not None and self.trials >= self.max_trials:
            return f"autoquant.max_trials={self.max_trials} reached"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "autoquant.max_minutes reached"
        return None


@contextlib.contextmanager
def _quiet():
    """The stages' console lines at WARNING while a step runs (warnings still show)."""
    logger = logging.getLogger("workbench.stages")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def reaches(top1: float, target: float) -> bool:
    """The target rule everywhere: a top-1 of exactly the target meets it, whatever the last bit of the subtraction."""
    return top1 >= target - 1e-9


def _settings_for(settings: QuantSettings, pair: str) -> QuantSettings:
    param, output, percentile = parse_scheme_pair(pair)
    changed = replace(settings, param_scheme=QuantScheme(param), output_scheme=QuantScheme(output))
    return replace(changed, percentile=percentile) if percentile is not None else changed


def run_autoquant(ctx: StageContext, result: StageResult) -> None:
    single_input_only(ctx, "+stage=autoquant")
    single_output_only(ctx, "autoquant")
    aq = ctx.config.autoquant
    split_seed = ctx.seed if aq.split_seed is None else aq.split_seed
    search_data, held_data = ctx.data.split_validation(aq.search_fraction, split_seed)
    result.tags[keys.TAG_AUTOQUANT_SPLIT_SEED] = str(split_seed)
    # the steps' per-layer SQNR is left out (a diagnosis of the choice only, computed once at the end)
    config = replace(ctx.config, tracking=replace(ctx.config.tracking, sqnr_samples=0))
    search, held = replace(ctx, data=search_data, config=config), replace(ctx, data=held_data)
    fp32_search = predict_classes(ctx.model, search_data.val_batches(), ctx.eval_output)
    target = fp32_search.top1 - aq.allowed_accuracy_drop
    result.metrics[keys.AUTOQUANT_FP32_SEARCH] = fp32_search.top1
    result.metrics[keys.AUTOQUANT_SEARCH_SAMPLES] = len(fp32_search.labels)
    result.tags[keys.TAG_AUTOQUANT_SEARCH_DIGEST] = fp32_search.digest
    log.info(
        "autoquant: %d search and %d held-out images; target top-1 %.2f %% (FP32 %.2f %% on the search images − %.1f pt)",
        len(fp32_search.labels),
        held_data.num_val,
        100 * target,
        100 * fp32_search.top1,
        100 * aq.allowed_accuracy_drop,
    )
    search = Search(search, result, target, Budget(aq.max_trials, aq.max_minutes))
    reference = search.attempt("baseline", "baseline", ctx.settings, also=search.schemes_sharing(ctx.settings))
    reference.kept = True
    search.best = reference
    stopped = search.run()
    _report(ctx, held, result, search.trials, search.best, reference, target, stopped)


def _candidates(ctx: StageContext) -> list[QuantSettings]:
    found: list[QuantSettings] = []
    for pair in ctx.config.autoquant.schemes:
        settings = _settings_for(ctx.settings, str(pair))
        if settings != ctx.settings and settings not in found:
            found.append(settings)
    return found


def _weights_group(s: QuantSettings) -> tuple:
    """What the calibration statistics depend on among the candidates: the weights' grids."""
    return (s.param_scheme, s.percentile if s.param_scheme is QuantScheme.percentile else None)


class Search:
    """The steps after the baseline on the search images, until the target is met, the budget is spent or a step
    shows it cannot be; ``trials`` is the decision path, ``best`` the choice so far."""

    def __init__(self, ctx: StageContext, result: StageResult, target: float, budget: Budget):
        self.ctx, self.result, self.target, self.budget = ctx, result, target, budget
        self.trials: list[Trial] = []
        self.candidates = _candidates(ctx)
        self.best: Trial

    def schemes_sharing(self, settings: QuantSettings) -> tuple[QuantScheme, ...]:
        """The output schemes of the candidates whose weights are ``settings``': one calibration pass serves them."""
        return tuple(dict.fromkeys(c.output_scheme for c in self.candidates if _weights_group(c) == _weights_group(settings)))

    def _record(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        # its child run: what it tried and its top-1 on the search images (whether it was kept: _report)
        metrics = {k: v for k, v in trial.result.metrics.items() if not k.startswith(EVALUATION_KEYS)}
        name = f"autoquant {len(self.trials)}: {trial.step} ({trial.stage}, {trial.schemes})"
        child = StageResult(metrics={**metrics, keys.AUTOQUANT_SEARCH_TOP1: trial.top1}, name=name)
        child.tags.update({keys.TAG_AUTOQUANT_STEP: trial.step, keys.TAG_AUTOQUANT_STEP_STAGE: trial.stage})
        self.result.children.append(child)
        log.info("autoquant %s (%s, %s): search top-1 %.2f %%", trial.step, trial.stage, trial.schemes, 100 * trial.top1)
        return trial

    def attempt(
        self, step: str, stage: str, settings: QuantSettings, also: tuple[QuantScheme, ...] = (), options: dict | None = None
    ) -> Trial:
        """Run ``stage`` (the registry's) at ``settings`` on the search images; ``options``: option nodes' values it
        runs with instead of the configured ones (``{"amp": {"candidates": ...}}``)."""
        self.budget.trials += 1
        scratch = StageResult()
        config = self.ctx.config
        for node, values in (options or {}).items():
            config = replace(config, **{node: replace(getattr(config, node), **values)})
        ctx = replace(self.ctx, config=replace(config, quant=settings), calibration_also=also)
        with self.result.timed(f"autoquant_{len(self.trials) + 1}_{step}"), _quiet():  # its trial line says it
            registry.get(stage).function()(ctx, scratch)
        trial = Trial(step, stage, settings, scratch.metrics[keys.SIM_TOP1], scratch, options=options or {})
        return self._record(trial)

    def probe(self, source: Trial, settings: QuantSettings) -> Trial:
        """``source``'s stage at another output scheme from the statistics its calibration collected: the same sim a
        run of that stage at ``settings`` builds, evaluated as it evaluates it."""
        self.budget.trials += 1
        scratch = StageResult()
        with self.result.timed(f"autoquant_{len(self.trials) + 1}_schemes"), _quiet():
            sim = source.result.sim
            assert sim is not None
            sim.use_output_scheme(settings.output_scheme, settings.percentile)
            evaluate_sim(self.ctx.with_settings(settings), sim, scratch)
        for what in ("metrics", "tags"):  # FP32 on the same images, the fold, the calibration
            mine = getattr(scratch, what)
            mine.update({k: v for k, v in getattr(source.result, what).items() if k not in mine})
        return self._record(Trial("schemes", source.stage, settings, scratch.metrics[keys.SIM_TOP1], scratch))

    def keep(self, trial: Trial) -> None:
        if trial.top1 > self.best.top1:
            trial.kept, self.best = True, trial

    def met(self) -> bool:
        return reaches(self.best.top1, self.target)

    def run(self) -> str:
        if self.met():
            return "met by the deployable baseline: nothing else tried"
        why = self._schemes()
        if why is not None:
            return why
        if self.met():
            return f"met by scheme selection ({self.best.schemes})"
        if (why := self.budget.spent()) is not None:
            return why
        if not reaches(self._weights_float().top1, self.target):
            return (
                "unreachable at these activation bitwidths: even float weights miss the target, so activation quantization is "
                "the problem; try quant.output_bw=16 for the layers +stage=analyze names (quant.overrides), or QAT "
                "(autoquant.allow_training=true)"
            )
        steps = ["cle", "bc", "adaround", "mixed_precision"] + (["qat"] if self.ctx.config.autoquant.allow_training else [])
        for stage in steps:
            if (why := self.budget.spent()) is not None:
                return why
            options = None
            if stage == "mixed_precision":
                if (options := self._amp_options()) is None:
                    continue
            self.keep(self.attempt(stage, stage, self.best.settings, options=options))
            if self.met():
                return f"met by {self.best.stage}"
        return "not met by any step" + (
            "" if self.ctx.config.autoquant.allow_training else " (QAT not tried: autoquant.allow_training=false)"
        )

    def _amp_options(self) -> dict | None:
        """AMP over ``autoquant.candidates`` on every search image, to the same target; None: no such step."""
        s, candidates = self.ctx.settings, self.ctx.config.autoquant.candidates
        if candidates is None:
            candidates = [[8, s.output_bw], [s.param_bw, s.output_bw]] if s.param_bw < 8 else []
        if not candidates:
            return None
        drop = self.ctx.config.autoquant.allowed_accuracy_drop
        return {"amp": {"candidates": [list(c) for c in candidates], "allowed_accuracy_drop": drop, "eval_samples": self.ctx.data.num_val}}

    def _schemes(self) -> str | None:
        """Each candidate pair: one calibration pass per weight scheme (the baseline's serves its own), the other
        output schemes read from its statistics."""
        sources = {_weights_group(self.best.settings): self.best}
        for settings in self.candidates:
            if (why := self.budget.spent()) is not None:
                return why
            source = sources.get(_weights_group(settings))
            if source is None:
                trial = sources[_weights_group(settings)] = self.attempt("schemes", "baseline", settings, self.schemes_sharing(settings))
            else:
                trial = self.probe(source, settings)
            self.keep(trial)
        return None

    def _weights_float(self) -> Trial:
        """The best so far with its weight quantizers off (activations quantized only): a diagnosis, never the choice."""
        self.budget.trials += 1
        scratch = StageResult()
        with self.result.timed(f"autoquant_{len(self.trials) + 1}_weights_float"):
            sim = self.best.activate()
            with sim.switchable() as enable:
                enable(set(), set(sim.output_quantizers))
                top1 = predict_classes(sim.model, self.ctx.data.val_batches(), self.ctx.eval_output).top1
        scratch.metrics[keys.SIM_TOP1] = top1
        return self._record(Trial("weights_float", self.best.stage, self.best.settings, top1, scratch))


def _report(ctx, held, result: StageResult, trials: list[Trial], best: Trial, reference: Trial, target: float, stopped: str) -> None:
    """The choice evaluated once on the held-out images, its test against the baseline there, the path and the recipe."""
    for key, value in best.result.metrics.items():  # what the chosen step computed (transforms, quantizers, timings)
        if not key.startswith(EVALUATION_KEYS) and key not in result.metrics:
            result.metrics[key] = value
    for what in ("tables", "documents", "figures"):
        getattr(result, what).update({k: v for k, v in getattr(best.result, what).items() if k != keys.ARTIFACT_PREDICTIONS})
    result.tags.update({k: v for k, v in best.result.tags.items() if k != keys.TAG_EVAL_DIGEST})
    with result.timed("autoquant_held_out"):
        fp32 = predict_classes(ctx.model, held.data.val_batches(), ctx.eval_output)
        baseline = predict_classes(reference.activate().model, held.data.val_batches(), ctx.eval_output)
        sim = best.activate()  # after the baseline's: a scheme trial may share its sim
        chosen = predict_classes(sim.model, held.data.val_batches(), ctx.eval_output)
        whole = predict_classes(sim.model, ctx.data.val_batches(), ctx.eval_output)
    if ctx.sqnr_samples > 0:  # the choice's per-layer SQNR vs FP32 on held-out images (the search left it out)
        record_layers(held, sim, result)
    record_accuracy(result, "fp32", fp32)
    top1 = record_accuracy(result, "sim", chosen)
    result.metrics[keys.SIM_DROP] = fp32.top1 - top1
    met = reaches(best.top1, target)
    result.metrics[keys.AUTOQUANT_TARGET_MET] = float(met)
    if not met:
        log.warning(
            "autoquant: the target was not met (%s); the best found is reported: %s at %.1f %% on the search images (target %.1f %%). "
            "Next: %s",
            stopped,
            f"{best.stage} · {best.schemes}",
            100 * best.top1,
            100 * target,
            _next_steps(ctx, stopped),
        )
    test = mcnemar_exact(chosen.correct, baseline.correct)
    cost = mcnemar_exact(chosen.correct, fp32.correct)  # is the held-out drop against FP32 more than noise?
    held_met, judged, warning = judge_held_out(fp32.top1, top1, ctx.config.autoquant.allowed_accuracy_drop, met, len(chosen.labels), cost)
    result.metrics[keys.AUTOQUANT_HELD_OUT_MET] = float(held_met)
    if warning:
        log.warning("autoquant: %s", warning)
    result.metrics.update(
        {
            keys.AUTOQUANT_SEARCH_TOP1: best.top1,
            keys.AUTOQUANT_TARGET: target,
            keys.AUTOQUANT_TRIALS: len(trials),
            keys.AUTOQUANT_BASELINE_TOP1: baseline.top1,
            keys.AUTOQUANT_DELTA: test.delta,
            keys.AUTOQUANT_P_VALUE: test.p_value,
            keys.AUTOQUANT_P_VALUE_FP32: cost.p_value,
            keys.AUTOQUANT_RECIPE_TOP1: whole.top1,
        }
    )
    for i, (trial, child) in enumerate(zip(trials, result.children), 1):
        result.series.setdefault(keys.AUTOQUANT_STEP_TOP1, {})[i] = trial.top1
        # AIMET's word: a step is effective when it is kept (it beat the best so far)
        child.tags[keys.TAG_AUTOQUANT_EFFECTIVE] = "n/a (a diagnosis)" if trial.step == "weights_float" else str(trial.kept).lower()
    choice = f"{best.stage} · {best.schemes}"
    result.tags.update({keys.TAG_AUTOQUANT_CHOICE: choice, keys.TAG_AUTOQUANT_STOPPED: stopped, keys.TAG_AUTOQUANT_VERDICT: test.verdict()})
    if best.result.simulated is not None:  # what the chosen stage simulated (mixed precision: its overrides)
        result.simulated = best.result.simulated
    elif best.settings != ctx.settings:
        result.simulated = best.settings
    steps = pd.DataFrame(
        [
            {
                "step": i,
                "tried": t.step,
                "stage": t.stage,
                "schemes": t.schemes,
                "param_bw": "float" if t.step == "weights_float" else "mixed" if t.stage == "mixed_precision" else t.settings.param_bw,
                "search_top1": t.top1,
                "kept": t.kept,
            }
            for i, t in enumerate(trials, 1)
        ]
    )
    result.tables[keys.ARTIFACT_AUTOQUANT_STEPS] = steps
    name = f"autoquant-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    config_dir = os.path.abspath(os.path.join(ctx.config.paths.outputs_dir, "recipes", name))
    os.makedirs(os.path.join(config_dir, "recipe"), exist_ok=True)
    options = {node: dict(values) for node, values in best.options.items()}
    if "amp" in options:  # the mixed-precision choice itself, beside the recipe: rerun without a search
        amp_file = os.path.join(config_dir, keys.ARTIFACT_AMP_OVERRIDES)
        shutil.copyfile(best.result.tags[keys.TAG_AMP_OVERRIDES_FILE], amp_file)
        options["amp"]["chosen"] = amp_file
    with open(os.path.join(config_dir, "recipe", f"{keys.AUTOQUANT_RECIPE}.yaml"), "w") as f:
        f.write(recipe_text(best, options))
    result.directories[keys.ARTIFACT_AUTOQUANT_RECIPE] = config_dir
    result.tags[keys.TAG_AUTOQUANT_RECIPE] = f"--config-dir {config_dir} +recipe={keys.AUTOQUANT_RECIPE}"
    # the exported model: the choice's own export when its stage exports (adaround, qat), else the chosen sim's
    if best.result.exported is not None:
        result.exported = best.result.exported
        result.directories.update(best.result.directories)  # beside the recipe folder
    else:
        export_dir = export_sim(held, sim, "autoquant", result)
        if best.settings.param_bw == 8 and best.settings.output_bw == 8:
            check_tflite(held, sim, export_dir, result)
    lost = [f"{t.step} ({t.stage}, {t.schemes}: {100 * t.top1:.1f} %)" for t in trials if not t.kept and t.step != "weights_float"]
    text = (
        f"AutoQuant chose **{choice}** ({stopped}). On the {len(chosen.labels)} held-out images: sim top-1 "
        f"{100 * top1:.1f} % [{_interval(result, 'sim')}] against FP32 {100 * fp32.top1:.1f} % [{_interval(result, 'fp32')}] "
        f"({100 * (top1 - fp32.top1):+.1f} pt, exact McNemar "
        f"p = {cost.p_value:.3g}: {cost.verdict()}); against the "
        f"configured deployable baseline on the same images {100 * test.delta:+.1f} pt (exact McNemar p = {test.p_value:.3g}: "
        f"**{test.verdict()}**). {judged} On the search images, where it was chosen: {100 * best.top1:.1f} % (a figure the choice "
        f"itself biases, shown for comparison). Did not help: {'; '.join(lost) or 'nothing else was tried'}."
    )
    path = "\n".join(
        ["| step | tried | stage | schemes | W | search top-1 | kept |", "|---|---|---|---|---|---|---|"]
        + [
            f"| {r.step} | {r.tried} | {r.stage} | {r.schemes} | {r.param_bw} | {100 * r.search_top1:.1f} % | {'yes' if r.kept else ''} |"
            for r in steps.itertuples()
        ]
    )
    result.tags[keys.TAG_DESCRIPTION] = f"{text}\n\nDecision path (target {100 * target:.1f} % on the search images):\n\n{path}\n"
    log.info("%s", text.replace("**", ""))
    log.info(
        "rerun the choice: python -m workbench %s (with this run's model and dataset overrides)", result.tags[keys.TAG_AUTOQUANT_RECIPE]
    )


def judge_held_out(
    fp32_top1: float, top1: float, allowed: float, met: bool, images: int, cost: PairedComparison
) -> tuple[bool, str, str | None]:
    """The search's rule judged on the held-out images: whether the choice's drop against FP32 there is within
    ``allowed``, the summary's sentence, and a warning when the search images met the target (``met``) and these
    do not (``cost``: the exact McNemar test of the choice against FP32 on them)."""
    held_met = reaches(top1, fp32_top1 - allowed)  # the search's rule
    sentence = (
        f"Against FP32 on the held-out images, {100 * (top1 - fp32_top1):+.1f} pt is {'within' if held_met else 'over'} the "
        f"allowed drop of {100 * allowed:.1f} pt"
        + ("" if held_met or not met else f" (met on the search images only; one image is {100 / images:.2g} pt here)")
        + "."
    )
    if held_met or not met:
        return held_met, sentence, None
    warning = (
        f"the target was met on the search images but not on the {images} held-out ones: {100 * (fp32_top1 - top1):.1f} pt "
        f"below FP32 there, {100 * allowed:.1f} pt allowed (exact McNemar against FP32 p = {cost.p_value:.3g}: {cost.verdict()}). "
        "The held-out figure is the answer: more validation images judge it more finely, and a smaller "
        "autoquant.allowed_accuracy_drop takes the search on to the next steps for a margin"
    )
    return held_met, sentence, warning


def _interval(result: StageResult, column: str) -> str:
    """``column``'s 95 % interval as recorded (``record_accuracy``), in %."""
    low, high = keys.ci_keys(keys.PREDICTION_COLUMNS[column])
    return f"{100 * result.metrics[low]:.1f}, {100 * result.metrics[high]:.1f}"


def _next_steps(ctx: StageContext, stopped: str) -> str:
    """What to try when the target is not met."""
    aq = ctx.config.autoquant
    tips = []
    if stopped.startswith("autoquant.max"):
        tips.append("a larger budget (autoquant.max_trials, autoquant.max_minutes)")
    if not aq.allow_training:
        tips.append("QAT with range learning (autoquant.allow_training=true)")
    tips.append("wider mixed-precision candidates (autoquant.candidates, e.g. [[16,16],[8,8],[4,8]])")
    tips.append(f"a larger allowed drop (autoquant.allowed_accuracy_drop={aq.allowed_accuracy_drop:g} now)")
    return "; ".join(tips)


def recipe_text(best: Trial, options: dict[str, dict[str, Any]]) -> str:
    """The chosen step as a Hydra config (``@package _global_``): its stage, its quantization setting and the option
    values the search gave it (``options``; everything else is the run's own configuration, given again with the
    recipe)."""
    s = best.settings
    lines = [
        "# @package _global_",
        f"# written by +stage=autoquant: {best.stage} at {best.schemes}, search top-1 {100 * best.top1:.2f} %",
        "defaults:",
        f"  - /stage: {best.stage}",
        "quant:",
        f"  param_scheme: {s.param_scheme.value}",
        f"  output_scheme: {s.output_scheme.value}",
        f"  param_bw: {s.param_bw}",
        f"  output_bw: {s.output_bw}",
        f"  per_channel: {str(s.per_channel).lower()}",
        f"  percentile: {s.percentile}",
    ]
    return "\n".join(lines) + "\n" + (yaml.safe_dump(options, default_flow_style=None, sort_keys=False) if options else "")
