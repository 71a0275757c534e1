"""The cohort benchmark script runs end to end on two small crops of the shared volumes (slow)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from core_helpers import SHARED_DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent"),
]
pytest.importorskip("distributed")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cohort.py"


def test_cohort_benchmark_writes_its_table_and_plot(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("cohort_benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    arguments = ["--cases", "2", "--crop", "32", "--workers", "1", "--output", str(tmp_path / "out")]
    assert benchmark.main([*arguments, "--data-root", str(SHARED_DATA)]) == 0
    with open(tmp_path / "out" / "cohort.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["cases"] == "2" and float(rows[0]["cases_per_min"]) > 0
    text = (tmp_path / "out" / "cohort.md").read_text()
    assert "Projection for 1000 subjects" in text and "| cpu | 1 | 2 |" in text
    assert (tmp_path / "out" / "cohort.png").stat().st_size > 1000
