"""The one naming contract for MLflow metric, tag and artifact keys (a neutral module: imports nothing)."""

from __future__ import annotations

FP32_TOP1 = "fp32/top1"
SIM_TOP1 = "sim/top1"
EVAL_SAMPLES = "eval/samples"  # validation images every accuracy of the run was measured on
CALIBRATION_SAMPLES = "calibration/samples"  # images the encodings were computed from (effective)
SIM_DROP = "sim/drop"  # fp32/top1 − sim/top1
NUM_PARAM_QUANTIZERS = "sim/param_quantizers"
NUM_OUTPUT_QUANTIZERS = "sim/output_quantizers"
MEAN_SQNR_DB = "sim/mean_sqnr_db"
WEIGHTS_QUANTIZED = "sim/weights_quantized"  # share of weight elements quantized (of those not float by AIMET's policy)
FLOAT_LAYERS = "sim/float_layers"  # layers whose weights or outputs stay float for a non-policy reason
TAG_SIM_KERNELS = "sim.kernels"  # fused (quantsim/kernels, compiled here) or tf_ops: how the sim's quantizers and statistics ran
TAG_COVERAGE = "coverage"  # "full", "user" (float only by the user's overrides) or "partial: <what the sim cannot quantize>"

TRANSFORMED_TOP1 = "transformed/top1"
TRANSFORMED_MAX_ABS_DIFF = "transformed/max_abs_diff"  # largest output difference vs the original
BNS_FOLDED = "transform/bns_folded"
BNS_AFFINE = "transform/bns_affine"
CLS_SETS = "transform/cls_sets"
LAYERS_SKIPPED = "transform/layers_skipped"
ABSORBED_LINKS = "transform/absorbed_links"
BORDER_LINKS = "transform/border_links"
TRANSFORM_CACHE_HIT = "transform/cache_hit"
BC_SHIFT_BEFORE = "bc/mean_abs_shift_before"
BC_SHIFT_AFTER = "bc/mean_abs_shift_after"
BC_LAYERS_CORRECTED = "bc/layers_corrected"
ADAROUND_FLIPS = "adaround/mean_flip_fraction"  # share of weights rounded the other way than nearest
ADAROUND_LOSS_NEAREST = "adaround/mean_loss_nearest"  # mean per-layer reconstruction loss, round-to-nearest
ADAROUND_LOSS = "adaround/mean_loss"  # the same with the AdaRounded kernels
ADAROUND_CACHE_HIT = "adaround/cache_hit"  # 1: the AdaRounded kernels came from the cache (same model, settings, samples)
ANALYZE_WORST_DROP = "analyze/worst_layer_drop"  # largest top-1 drop with only one layer quantized
ANALYZE_BEST_GAIN = "analyze/best_float_gain"  # largest top-1 won back by leaving one layer float
ANALYZE_QUANTIZED_TOP1 = "analyze/quantized_top1"  # everything quantized, on the analysis images
ANALYZE_EVAL_SAMPLES = "analyze/eval_samples"
TAG_DESCRIPTION = "mlflow.note.content"  # the run's description in the MLflow UI (Markdown)
PARENT_RUN_FILE = "parent_run_id"  # in a sweep's folder: the parent run id, for people and tools
TAG_THREADS = "tf.threads"  # TensorFlow's intra-op pool size in the job (0: TensorFlow's default, one per core)
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
AMP_RELATIVE_BITOPS = "amp/relative_bitops"  # the chosen configuration's BitOps over W8A8's
AMP_SEARCH_TOP1 = "amp/search_top1"  # its top-1 on the search subset
AMP_LAYERS_LOWERED = "amp/groups_lowered"  # quantizer groups below the highest candidate
AUTOQUANT_FP32_SEARCH = "autoquant/fp32_search_top1"  # FP32 on the search images (the target's reference)
AUTOQUANT_SEARCH_SAMPLES = "autoquant/search_samples"  # how many search images (eval/samples: the held-out ones)
AUTOQUANT_SEARCH_TOP1 = "autoquant/search_top1"  # the choice on the search images: the selection's own, optimistic figure
AUTOQUANT_TARGET = "autoquant/target_top1"
AUTOQUANT_TRIALS = "autoquant/trials"
AUTOQUANT_TARGET_MET = "autoquant/target_met"  # 1: the choice meets the target on the search images; 0: the best found
# 1: the choice's held-out drop against FP32 is within autoquant.allowed_accuracy_drop too (the judgement, not the search's)
AUTOQUANT_HELD_OUT_MET = "autoquant/held_out_met"
AUTOQUANT_STEP_TOP1 = "autoquant/step_top1"  # per trial (step = trial number), on the search images
AUTOQUANT_BASELINE_TOP1 = "autoquant/baseline_top1"  # the configured deployable baseline on the held-out images
AUTOQUANT_DELTA = "autoquant/delta_vs_baseline"  # the choice − that baseline, held-out images (exact McNemar below)
AUTOQUANT_P_VALUE = "autoquant/p_value"
AUTOQUANT_P_VALUE_FP32 = "autoquant/p_value_vs_fp32"  # the choice vs FP32 on the held-out images (exact McNemar)
# the choice on the whole validation split (search and held-out images): what rerunning its recipe gives, bit for bit
AUTOQUANT_RECIPE_TOP1 = "autoquant/recipe_top1"
TAG_AUTOQUANT_CHOICE = "autoquant.choice"
TAG_AUTOQUANT_STOPPED = "autoquant.stopped"  # why the search ended: the step that met the target, the budget, ...
TAG_AUTOQUANT_VERDICT = "autoquant.verdict"
TAG_AUTOQUANT_SPLIT_SEED = "autoquant.split_seed"  # the seed that drew the search and held-out images
TAG_AUTOQUANT_SEARCH_DIGEST = "autoquant.search_digest"  # the search images (eval.digest names the held-out ones)
TAG_AUTOQUANT_RECIPE = "autoquant.recipe"  # the overrides that rerun the choice
TAG_AUTOQUANT_STEP = "autoquant.step"  # a trial's child run: what it tried (baseline, schemes, cle, ...)
TAG_AUTOQUANT_STEP_STAGE = "autoquant.stage"  # the stage that computed it
TAG_AUTOQUANT_EFFECTIVE = "autoquant.effective"  # true: kept (it beat the best so far)
AUTOQUANT_RECIPE = "autoquant_recipe"
ARTIFACT_AUTOQUANT_STEPS = "autoquant_steps.csv"
ARTIFACT_AUTOQUANT_RECIPE = "recipe"  # the config folder holding recipe/autoquant_recipe.yaml
QAT_LOSS = "qat/loss"  # per epoch (step = epoch)
QAT_TOP1 = "qat/top1"  # per epoch, the QAT model on the validation split
QAT_SIM_BEFORE = "qat/sim_top1_before"  # the calibrated sim before fine-tuning
QAT_RANGE_MOVE = "qat/mean_range_change"  # mean |Δmin| + |Δmax| of the output quantizers
TFLITE_TOP1 = "tflite/top1"  # the int8 TFLite model under the LiteRT interpreter
FIDELITY_GAP = "fidelity/gap"  # sim/top1 − tflite/top1
TFLITE_FLOAT_TENSORS = "tflite/float_tensors"
TAG_TFLITE_ERROR = "tflite.error"

# a sweep's parent run id, handed by the Hydra callback to the jobs (inherited by launcher workers)
ENV_PARENT_RUN_ID = "WORKBENCH_PARENT_RUN_ID"

TAG_STAGE = "stage"
TAG_MODEL = "model"
TAG_DATASET = "dataset"
TAG_SCHEME = "scheme"
TAG_PARAM_BW = "param_bw"
TAG_OUTPUT_BW = "output_bw"
TAG_PER_CHANNEL = "per_channel"
TAG_REQUESTED = "requested"  # the run name the config asked for, when the stage simulated another setting (mixed_precision)
TAG_OVERRIDES = "overrides"
TAG_DEPLOYABLE = "deployable"  # on baseline runs: "false" when BNs stayed float (not what a device runs)
TAG_EVAL_DIGEST = "eval.digest"  # identifies the validation images (count + labels): paired tests need equal digests
TAG_PARENT = "mlflow.parentRunId"
# MLflow's own tags: who ran a run and from what (the UI's Created by and Source), the experiment's kind,
# the role a logged dataset played, and the prefix of a shared runs-table view (opened by ?viewStateShareKey=)
TAG_USER = "mlflow.user"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
TAG_DATA_CONTEXT = "mlflow.data.context"
TAG_SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
# a stage run is an evaluation of a quantized model (MLflow's run type): the UI then shows a pipeline's or a
# sweep's parent row expanded, its children with their figures, instead of one folded row
TAG_RUN_TYPE, EVALUATION_RUN = "mlflow.runType", "evaluation"
# what a stage noted about itself
TAG_CALIBRATION_CAPPED = "calibration.capped"  # fewer calibration samples than asked for, and why
TAG_CLE_RELU6_MODE = "cle.relu6_mode"
TAG_QAT_SCHEME = "qat.scheme"  # the range-learning schemes QAT trained with
TAG_ANALYZE_WORST = "analyze.worst_layers"
TAG_AMP_OVERRIDES_FILE = "amp.overrides_file"  # the chosen per-layer bitwidths, reusable as quant.overrides
TAG_TFLITE = "tflite"  # why no int8 TFLite model was converted
TAG_TFLITE_IO = "tflite.io"  # the int8 model's input and output dtypes
TAG_TFLITE_FLOAT_TENSORS = "tflite.float_tensors"  # the tensors left float in the int8 model
TAG_HOST = "host"  # the machine and process a run executes in (for `python -m workbench.runs repair`)
TAG_PID = "pid"
TAG_PID_START = "pid.start"  # the process's start time (seconds since the epoch): a reused pid is another process
TAG_REPAIRED = "repaired"
TAG_ERROR = "error"  # a FAILED run's one-line error
TAG_PIPELINE = "pipeline"  # on a pipeline's parent run: its stages
PIPELINE_FAILED = "pipeline/stages_failed"

ARTIFACT_CONFIG = "config.yaml"
ARTIFACT_TRACEBACK = "traceback.txt"
ARTIFACT_LAYERS = "layers.csv"
ARTIFACT_COVERAGE = "coverage.csv"  # every weight tensor and op output: quantized, or why not
ARTIFACT_ENCODINGS = "encodings/model.encodings"
ARTIFACT_ENCODINGS_V1 = "encodings/model_v1.encodings"
ARTIFACT_CHANNEL_RANGES = "channel_ranges.csv"
ARTIFACT_CHANNEL_RANGES_PNG = "channel_ranges.png"
ARTIFACT_TRANSFORM_REPORT = "transform_report.json"
ARTIFACT_BIAS_CORRECTION = "bias_correction.csv"
ARTIFACT_ADAROUND = "adaround_layers.csv"
ARTIFACT_AMP_FRONT = "amp_pareto_front.csv"
ARTIFACT_AMP_FRONT_PNG = "amp_pareto_front.png"
ARTIFACT_AMP_SENSITIVITY = "amp_sensitivity.csv"
ARTIFACT_AMP_OVERRIDES = "mixed_precision_overrides.json"  # loadable with quant.overrides=<file>
ARTIFACT_SENSITIVITY = "sensitivity.csv"
ARTIFACT_SENSITIVITY_PNG = "sensitivity.png"
ARTIFACT_RANGES = "ranges.csv"
ARTIFACT_RANGE_HISTOGRAMS_PNG = "worst_layer_histograms.png"
ARTIFACT_EXPORT = "export"


ARTIFACT_PREDICTIONS = "predictions.csv"  # per validation image: label and each model's predicted class

# the models whose per-image predictions a run keeps (columns of predictions.csv) and their top-1 keys
PREDICTION_COLUMNS = {"fp32": FP32_TOP1, "sim": SIM_TOP1, "tflite": TFLITE_TOP1}


# a task other than classification (task=segmentation, ...): per validation sample, each model's task statistics
# (columns <model>:<k>, e.g. sim:0) from which its metric, interval and paired tests are computed again
ARTIFACT_SAMPLES = "samples.csv"
TAG_TASK = "task"  # what the headline metric measures: classification, segmentation, regression, fidelity, custom
TAG_TASK_METRIC = "task.metric"  # the headline metric's name (top1, miou, mae, sqnr_db, ...): <model>/<metric>
TAG_TASK_SPEC = "task.spec"  # the task's class and values as JSON (a report rebuilds its metric for paired tests)
CLASSIFICATION_METRIC = "top1"


def metric_key(model: str, metric: str) -> str:
    """A model's headline metric, e.g. ``sim/miou`` (``sim/top1`` for classification)."""
    return f"{model}/{metric}"


def ci_keys(metric: str) -> tuple[str, str]:
    """The 95 % interval metrics of an accuracy, e.g. ``sim/top1_ci_low``, ``sim/top1_ci_high``."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


def timing_key(phase: str) -> str:
    """Wall time of one phase in seconds, e.g. ``time/calibration_s``."""
    return f"time/{phase}_s"
