"""diffxai.snapshot: the committed record of a run counts the combined verdicts per claim and
copies the tables it names; a folder without a finished run is refused with one line."""
import pandas as pd
import pytest

from diffxai import snapshot as SN
from diffxai.errors import DiffxaiError


def _results(tmp_path):
    r = tmp_path / "results"
    (r / "analysis").mkdir(parents=True)
    (r / "benchmarks" / "classify").mkdir(parents=True)
    pd.DataFrame({"cls": ["a", "b"], "onset": [40.0, 50.0]}).to_csv(r / "onset.csv", index=False)
    rows = [("outline first, details later", "a", "combined", "supported"),
            ("outline first, details later", "b", "combined", "not supported (opposite direction: outline change)"),
            ("outline first, details later", "c", "combined", "undecided (methods disagree: x)"),
            ("outline first, details later", "a", "integrated_gradients", "undecided (CI includes 0)"),
            ("what carries the low_freq_share trend", "a", "combined", "carried by the gradient")]
    pd.DataFrame(rows, columns=["claim", "cls", "xai_method", "verdict"]).to_csv(r / "analysis" / "verdicts.csv",
                                                                              index=False)
    (r / "benchmarks" / "classify" / "a.tsv").write_text("s\th:m:s\n12.5\t0:00:12\n")
    return r


def test_claim_counts_and_files(tmp_path):
    r = _results(tmp_path)
    cfg = tmp_path / "paper.yaml"
    cfg.write_text("classes: [a]\n")
    out = SN.snapshot(r, tmp_path / "snap", "make run", [cfg], wall=61.0)
    c = pd.read_csv(out / "claims.csv").set_index("claim")
    row = c.loc["outline first, details later"]
    assert (row["classes"], row["supported"], row["not supported"], row["undecided"]) == (3, 1, 1, 1)
    assert row["not supported: classes"] == "b" and row["undecided: classes"] == "c"   # the reason is dropped
    assert c.loc["what carries the low_freq_share trend", "carried by the gradient"] == 1
    assert {p.name for p in out.iterdir()} == {"onset.csv", "verdicts.csv", "claims.csv", "jobs.csv", "RUN.md",
                                               "config-paper.yaml"}
    run = (out / "RUN.md").read_text()
    assert "make run" in run and "wall time: 61 s" in run and "job-seconds (sum over 1 jobs): 12 s" in run


def test_no_finished_run_is_one_line(tmp_path):
    with pytest.raises(DiffxaiError, match="holds no finished run"):
        SN.snapshot(tmp_path, tmp_path / "snap", "make run")
    assert SN.main([str(tmp_path), str(tmp_path / "s"), "--command", "x"]) == 2
