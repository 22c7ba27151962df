"""The report as one self-contained HTML file: a Jinja2 template, tables styled by pandas' Styler, plots
embedded as PNG data. Opens from disk or from the MLflow UI's artifact view, with nothing beside it.
"""

from __future__ import annotations

import base64
import platform
import time
from importlib import metadata

import jinja2
import pandas as pd

from workbench.evaluation.statistics import BETTER, WORSE
from workbench.reporting.tables import readable

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("workbench.reporting", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"])
)
VERDICT_COLOURS = {BETTER: "background-color: #dafbe1", WORSE: "background-color: #ffebe9"}
PACKAGES = ("workbench", "tensorflow", "keras", "mlflow")


def versions() -> dict[str, str]:
    """The versions a report was made with (read from the installed metadata: nothing is imported)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _verdict_style(value) -> str:
    text = str(value)
    return next((style for verdict, style in VERDICT_COLOURS.items() if text == verdict or text.endswith(f" {verdict}")), "")


def _styled(frame: pd.DataFrame, caption: str, index: bool = False) -> str:
    """A table as HTML through pandas' Styler: verdict cells coloured, no index column unless asked."""
    styler = frame.style.map(_verdict_style).set_caption(caption)
    if not index:
        styler = styler.hide(axis="index")
    return styler.to_html()


def _sqnr_table(sqnr: pd.DataFrame) -> str:
    if sqnr.empty:
        return ""
    finite = sqnr.replace([float("inf"), float("-inf")], float("nan"))
    styler = (
        finite.style.format("{:.1f}", na_rep="—")
        .background_gradient(cmap="RdYlGn", axis=None)
        .highlight_null(color="#ffffff")  # a layer without an output quantizer: blank, not the gradient's dark
        .set_caption("output SQNR of each layer, FP32 against the sim (higher is better); layers in network order")
    )
    return styler.to_html()


def render_html(report, title: str, figures: dict[str, bytes]) -> str:
    """The whole report; ``report`` is a :class:`workbench.reporting.report.Report`, ``figures`` PNG bytes."""
    compared, h = report.compared, report.headline
    percent = " in %" if h.task.percent else ""
    differ = ", ".join(compared.setting_keys + compared.variant_keys) if compared is not None else ""
    commands = list(dict.fromkeys(compared.runs["command"])) if compared is not None and "command" in compared.runs else []
    answers = [f"{row.setting}: best technique {row.best}" for row in report.best.itertuples()] or ["no technique runs to compare"]
    context = {
        "title": title,
        "generated": time.strftime("%Y-%m-%d %H:%M %Z"),
        "versions": versions(),
        "answers": answers,
        "differ": differ or "nothing (one setting)",
        "wide": _styled(report.wide, f"sim {h.label}{percent} [95 % interval] and the verdict against the deployable baseline", index=True),
        "best": _styled(
            readable(report.best, h.percent_columns()), f"the best sim {h.label} per setting, and whether the paired test says so"
        )
        if not report.best.empty
        else "",
        "comparison": _styled(
            readable(report.table, h.percent_columns()), f"one row per run: {h.label}{percent}, delta and p against the baseline"
        ),
        "sqnr": _sqnr_table(report.sqnr),
        "excluded": _styled(report.excluded, "runs not compared, and why") if not report.excluded.empty else "",
        "autoquant": [(caption, _styled(steps, "step by step, on the search images")) for caption, steps in report.autoquant],
        "figures": {name: base64.b64encode(data).decode("ascii") for name, data in figures.items()},
        "commands": commands,
    }
    return TEMPLATES.get_template("report.html.j2").render(**context)
