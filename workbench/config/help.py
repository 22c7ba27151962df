"""``python -m workbench --help``: the app's own help (Hydra's ``hydra.help.template``), built from ``conf/``.

Lists the config groups with their options (the schema nodes ``base_*`` are internal and left out), the
stages, the main overrides with their allowed values and examples. Built when the configs are registered,
so a new YAML option shows up without editing the help.
"""

from __future__ import annotations

from pathlib import Path

from workbench.options import MAX_BITWIDTH, MIN_BITWIDTH, BiasCorrectionMode, QuantScheme, ReLU6Mode, Target
from workbench.registry import stages

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
INTERNAL_PREFIX = "base_"
HIDDEN_GROUPS = ("hydra",)  # Hydra's own settings: --hydra-help
GROUP_NOTES = {
    "model": "the FP32 model (keras_file: model.path=FILE.keras)",
    "dataset": "the data (image_folder: DIR of class folders; arrays: an .npz of any rank; imagenet: TFRecords)",
    "task": "what the model is for and its metric (top-1, mean IoU, MAE, label-free SQNR, your own)",
    "quant": "quantization presets (each key also alone: quant.param_bw=4)",
    "stage": "one stage instead of the pipeline: +stage=NAME",
    "sweep": "preset sweeps: -m +sweep=NAME",
    "tracking": "where runs go (tracking.uri=http://HOST:PORT or sqlite:///FILE)",
    "paths": "where outputs go (paths.outputs_dir=DIR)",
}


def _values(enum) -> str:
    return " | ".join(member.value for member in enum)


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group of ``conf_dir`` and its options (YAML file names), internal ones left out."""
    groups = {}
    for folder in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name not in HIDDEN_GROUPS):
        options = sorted(f.stem for f in folder.glob("*.yaml") if not f.stem.startswith(INTERNAL_PREFIX))
        if folder.name == "stage":  # plug-in stages may come without a YAML file
            options = sorted({*options, *stages()})
        if options:
            groups[folder.name] = options
    return groups


def help_template(conf_dir: Path = CONF_DIR) -> str:
    """The text of ``--help`` (``$CONFIG`` is Hydra's: the composed config of the command line given)."""
    groups = group_options(conf_dir)
    width = max(len(g) for g in groups) + 2
    lines = [
        "workbench: how much accuracy int8 costs a Keras model, and which post-training technique wins it back",
        "(AIMET's workflow on TensorFlow / Keras 3, tracked in MLflow).",
        "",
        "Usage:",
        "  python -m workbench [GROUP=OPTION ...] [KEY=VALUE ...]          the pipeline (pipeline.stages), one parent run",
        "  python -m workbench +stage=NAME [KEY=VALUE ...]                 one stage, one run",
        "  python -m workbench -m +stage=NAME KEY=V1,V2 [...]              a sweep: a parent run, a child run per job",
        "",
        "Stages (+stage=NAME):",
        *(f"  {name:<17}{record.help}" for name, record in stages().items()),
        "",
        "Config groups (GROUP=OPTION):",
        *(
            f"  {group + ':':<{width}}{', '.join(options)}{'  — ' + GROUP_NOTES[group] if group in GROUP_NOTES else ''}"
            for group, options in groups.items()
        ),
        "",
        "Main overrides:",
        f"  quant.param_bw=N quant.output_bw=N    weight / activation bitwidths ({MIN_BITWIDTH}..{MAX_BITWIDTH})",
        "  quant.per_channel=true|false          per-channel weight encodings",
        f"  quant.scheme=S                        {_values(QuantScheme)}",
        "  quant.param_scheme / output_scheme    the scheme for weights / activations alone",
        f"  quant.target=T                        {_values(Target)} (tflite: what the int8 TFLite runtime computes)",
        "  quant.overrides=FILE                  per-layer bitwidths / disabling (YAML or JSON)",
        "  quant.calibration_samples=N           images the encodings are computed from",
        f"  cle.relu6_mode=M                      {_values(ReLU6Mode)}",
        f"  bc.mode=M                             {_values(BiasCorrectionMode)}",
        "  qat.epochs=N adaround.num_iterations=N   the training budgets",
        "  export.register_as=NAME               register the exported model in the MLflow Model Registry",
        "  eval.output=NAME                      the output of a multi-output model the task reads (top-1 of the classifier)",
        "  eval.allow_class_mismatch=true        run a model whose class count differs from the dataset's anyway",
        "  tracking.uri=URI tracking.experiment=NAME   where runs go",
        "  verbosity=0|1|2                       console: summary only | progress (default) | TensorFlow's logs too",
        "  seed=N                                every random choice (data split, calibration samples, training)",
        "",
        "Examples:",
        "  python -m workbench +stage=cle quant.param_bw=4",
        "  python -m workbench -m +stage=bc quant.param_bw=4,6,8",
        "  python -m workbench -m +sweep=stages hydra/launcher=joblib",
        "  python -m workbench +stage=qat model=keras_file model.path=my_model.keras dataset=image_folder dataset.path=images/",
        "  python -m workbench +stage=bc task=segmentation dataset=digit_canvas model=digit_segmenter",
        "  python -m workbench +stage=bc task=fidelity model=keras_file model.path=m.keras dataset=arrays dataset.path=inputs.npz",
        "  python -m workbench.report --experiment workbench      the comparison report of an experiment",
        "",
        "The whole configuration: python -m workbench --cfg job   Hydra's own options: --hydra-help",
        "",
        "== Config (with the overrides given) ==",
        "$CONFIG",
    ]
    return "\n".join(lines)
