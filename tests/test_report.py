"""results/report.md: rendered from report/report.md.j2; golden files in tests/data/report/
(written from the constructed inputs of report_inputs.py and read by eye) pin every byte, and the
layout test pins what a reader meets first: the answer and the onsets, then the details, the
figures embedded, the settings last."""
import pytest

from diffxai.stages.report import report
from report_inputs import write_inputs

from conftest import REPO


@pytest.mark.parametrize("variant", [0, 1])
def test_the_report_is_byte_identical_to_the_golden_file(tmp_path, monkeypatch, variant):
    monkeypatch.chdir(tmp_path)   # the figures' paths are relative to the working folder, as in a run
    kw = write_inputs(tmp_path / "in", variant)
    report(md="results/report.md", **kw)
    got = (tmp_path / "results" / "report.md").read_bytes()
    assert got == (REPO / "tests" / "data" / "report" / f"report_{variant}.md").read_bytes()


def test_the_report_opens_with_the_answer_and_ends_with_the_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = write_inputs(tmp_path / "in", 0)
    report(md="results/report.md", **kw)
    text = (tmp_path / "results" / "report.md").read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads[0] == "## The answer" and heads[-1] == "## Settings"
    answer = text.split("## The answer")[1].split("## ")[0]
    assert "| outline first, details later | tiger | image (1 image, 4 seeds) | **undecided (methods disagree)** |" \
        in answer and "| class | images × seeds |" in answer   # the verdicts, then the onset table
    # figures are embedded as images, by their path relative to the report
    assert "![softmax_curves](figures/softmax_curves.png)" in text and "![occlusion_grid](../x/y/occlusion_grid.png)" in text
    assert "| carried by the gradient | undecided (no gradient-only control for this method) |" in text
