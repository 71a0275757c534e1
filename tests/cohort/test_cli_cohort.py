"""``isfl cohort`` on the command line: usage errors, a CSV manifest on an existing cluster
(``--scheduler``), exit statuses, and (slow) Ctrl-C / SIGTERM to a real ``isfl cohort`` process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cohort_helpers import write_cohort

from core_helpers import default_sigint, leftovers
from napari_isfl.cli import main

pytest.importorskip("distributed")


def _statuses(folder: Path) -> list[str]:
    with open(folder / "summary.csv", newline="") as handle:
        return [row["status"] for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give a CSV manifest or --bids ROOT"),
        (["m.csv", "--bids", "root"], "give a CSV manifest or --bids ROOT"),
        (["--bids", "root"], "--bids needs --inputs"),
        (["m.csv", "--inputs", "T1w,FLAIR"], "--inputs applies to --bids"),
        (["m.csv", "--workers", "2", "--scheduler", "tcp://h:8786"], "--workers starts a local cluster"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path: Path, arguments: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["cohort", *arguments, "-o", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_manifest_is_one_line_and_starts_nothing(capsys, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,t1c,flair\nx,a.nii.gz,b.nii.gz\n")
    assert main(["cohort", str(manifest), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("isfl cohort: error: ") and "the header must be 'case'" in err[0]
    )
    assert not (tmp_path / "out").exists()


def test_csv_manifest_on_an_existing_cluster(
    capsys, tmp_path: Path, cluster_client, tiny_checkpoint_3d: Path
) -> None:
    """Exit 1 when a case fails (the others finish), the failure and the totals on stderr; after the
    manifest is fixed, the rerun skips the four and exits 0. A bad model stops the run before any case."""
    manifest = write_cohort(tmp_path)
    address = cluster_client.scheduler.address
    common = ["-o", str(tmp_path / "out"), "--scheduler", address, "--model", str(tiny_checkpoint_3d)]
    assert main(["cohort", str(manifest), *common, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "isfl cohort: 5 cases; inputs t1c (mri), flair (mri)" in err
    assert "failed bad: flair.nii.gz is not on the voxel grid of t1c.nii.gz" in err
    assert "isfl cohort: 4 done, 0 skipped, 1 failed of 5 cases" in err
    assert _statuses(tmp_path / "out") == ["done"] * 4 + ["failed"]

    manifest.write_text(manifest.read_text().replace("bad/flair.nii.gz", "p0/flair.nii.gz"))
    assert main(["cohort", str(manifest), *common, "--device", "cpu", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert _statuses(tmp_path / "out") == ["skipped"] * 4 + ["done"]

    bad_model = ["-o", str(tmp_path / "out2"), "--scheduler", address, "--model", str(tmp_path / "none.pt")]
    assert main(["cohort", str(manifest), *bad_model, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.pt" in err[0]
    assert not (tmp_path / "out2" / "summary.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_a_real_run_cleanly(
    tmp_path: Path, tiny_checkpoint_3d: Path, signum: int, status: int
) -> None:
    """SIGINT / SIGTERM to ``isfl cohort`` (its own local cluster of 2 workers) once two cases are done:
    exit 130 / 143 with a one-line message, finished cases kept, no temporary file, no worker process
    left; the rerun skips what finished and completes the rest."""
    manifest = write_cohort(tmp_path, bad=False)
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([rows[0]] + [f"c{k}-{row}" for k in range(4) for row in rows[1:]]) + "\n")
    out = tmp_path / "out"
    options = ["-o", str(out), "--workers", "2", "--model", str(tiny_checkpoint_3d), "--device", "cpu",
               "--stability"]  # fmt: skip
    command = [sys.executable, "-m", "napari_isfl.cli", "cohort", str(manifest), *options]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/provenance.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-2000:]
    last = err.strip().splitlines()[-1]
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert last.startswith(f"isfl cohort: {word}: ")
    assert " pending; finished cases are kept and a rerun skips them" in last
    statuses = _statuses(out)
    assert len(statuses) == 16 and "pending" in statuses
    for folder in [out, *[p for p in out.iterdir() if p.is_dir()]]:
        assert leftovers(folder) == []
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout
    assert children.strip() == ""
    done = len(list(out.glob("*/provenance.json")))
    assert main(["cohort", str(manifest), *options, "-q"]) == 0
    assert _statuses(out).count("skipped") == done


def test_missing_dask_names_the_extra(capsys, monkeypatch, tmp_path: Path) -> None:
    manifest = write_cohort(tmp_path, bad=False)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import raises ImportError
    assert main(["cohort", str(manifest), "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "napari-isfl[cohort]"' in err[0]
