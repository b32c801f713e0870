"""results/report.md: rendered from report/report.md.j2, byte-identical to the report the
workflow wrote before its prose moved into the template (golden files in tests/data/report/,
written from the same constructed inputs)."""
import pytest

from diffxai.stages.report import report
from report_inputs import write_inputs

from conftest import REPO


@pytest.mark.parametrize("variant", [0, 1])
def test_the_report_is_byte_identical_to_the_golden_file(tmp_path, variant):
    kw = write_inputs(tmp_path / "in", variant)
    report(md=str(tmp_path / "report.md"), **kw)
    got = (tmp_path / "report.md").read_bytes()
    assert got == (REPO / "tests" / "data" / "report" / f"report_{variant}.md").read_bytes()
