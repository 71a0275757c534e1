"""The benchmark scripts run end to end (tiny inputs): each measurement is a child process, so a spec
that misses a key shows up only as an error row, which these tests refuse."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scaling  # noqa: E402
import speed  # noqa: E402


def test_make_spec_needs_one_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        speed.make_spec("isfl")
    assert speed.make_spec("dwt", size="32x32", device="cuda")["device"] == "cpu"


@pytest.mark.slow
def test_speed_and_scaling_scripts_measure_isfl_and_a_baseline(tmp_path: Path, monkeypatch, capsys) -> None:
    assert speed.main(["--sizes", "40x40", "--baselines", "dwt", "--repeat", "0", "--patch-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert '"method": "isfl"' in printed and '"method": "dwt"' in printed and "error" not in printed
    assert '"patch_size": "16"' in printed and '"windows": 9' in printed

    monkeypatch.setattr(scaling, "QUICK", {"headline": ["40x40"], "cubes": [], "modality_sizes": []})
    out = tmp_path / "scaling"
    assert (
        scaling.main(["--quick", "--no-case", "--baselines", "dwt", "--repeat", "0", "--output", str(out)])
        == 0
    )
    with open(out / "speed.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == {"isfl", "dwt"}
    assert all(not r.get("error") for r in rows), rows
    assert (out / "speed.md").exists() and (out / "scaling.png").exists()
