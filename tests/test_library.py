"""The library as a user sees it: the root API, and README's example run as it is written."""

import re
from pathlib import Path

import pytest

import workbench

README = Path(__file__).resolve().parents[1] / "README.md"


def test_root_api_covers_the_documented_names():
    for name in (
        "QuantizationSimModel",
        "QuantSettings",
        "fold_batch_norms",
        "equalize_model",
        "correct_bias",
        "train_qat",
        "export_encodings",
        "Dataset",
        "wilson_interval",
        "mcnemar_exact",
        "flatten_model",
        "coverage_table",
    ):
        assert name in workbench.__all__ and getattr(workbench, name) is not None


@pytest.mark.slow  # several seconds: kept out of the fast loop
def test_readme_library_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"<!-- library-example -->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "out" / "model.encodings").exists() and (tmp_path / "out" / "model_v1.encodings").exists()
