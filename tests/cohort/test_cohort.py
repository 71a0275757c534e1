"""``fuse_cohort`` on a real Dask ``LocalCluster`` of 2 worker processes: five small real cases (crops of
the TCGA sample, one deliberately not on one grid), failure isolation, the summary, resume after a full
and a partial run, an interrupted run, a killed worker, and identical outputs for 1 and 2 workers."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cohort_helpers import write_cohort

from core_helpers import leftovers

distributed = pytest.importorskip("distributed")

from napari_isfl import fuse_cohort  # noqa: E402
from napari_isfl.cohort import CohortCase, default_worker_count, read_manifest  # noqa: E402
from napari_isfl.cohort.resume import read_provenance  # noqa: E402
from napari_isfl.cohort.run import LOCK_NAME, _connect  # noqa: E402

GOOD = ["p0", "p1", "p2", "p3"]


def _summary(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "summary.csv", newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _no_leftovers(folder: Path) -> list[str]:
    """Hidden or staging files anywhere under ``folder`` (temporary files, the run's lock)."""
    found = leftovers(folder)
    for sub in folder.iterdir():
        if sub.is_dir():
            found += [f"{sub.name}/{name}" for name in leftovers(sub)]
    return found


def _wait_until_idle(client, timeout: float = 60.0) -> None:
    """Cancelled tasks that were already running finish on their worker: wait for them."""
    deadline = time.monotonic() + timeout
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, cluster_client, tiny_checkpoint_3d: Path):
    """One run of the five-case cohort on the two-worker cluster, with the outcomes as reported live."""
    folder = tmp_path_factory.mktemp("cohort")
    manifest = write_cohort(folder)
    reported = []
    result = fuse_cohort(
        manifest,
        folder / "out",
        client=cluster_client,
        model=tiny_checkpoint_3d,
        device="cpu",
        progress=reported.append,
    )
    return folder, manifest, result, reported


def test_two_workers_fuse_the_cohort_and_report_the_bad_case(first_run, tiny_checkpoint_3d: Path) -> None:
    """Four cases are fused, the one whose inputs are not on one grid fails in one line without stopping
    them; summary.csv has every case in manifest order; both workers took cases and each loaded the
    model once (one engine per worker); no temporary file or lock is left."""
    folder, _, result, reported = first_run
    out = folder / "out"
    assert [o.case for o in result.outcomes] == [*GOOD, "bad"]
    assert [o.status for o in result.outcomes] == ["done"] * 4 + ["failed"]
    assert result.exit_code == 1 and result.count("done") == 4 and result.workers == 2
    assert sorted(o.case for o in reported) == sorted([*GOOD, "bad"])
    bad = result.failed[0]
    assert "flair.nii.gz is not on the voxel grid of t1c.nii.gz" in bad.error and "\n" not in bad.error

    rows = _summary(out)
    assert list(rows) == [*GOOD, "bad"]
    assert rows["bad"]["status"] == "failed" and rows["bad"]["error"] == bad.error
    for name in GOOD:
        row = rows[name]
        assert row["status"] == "done" and row["error"] == "" and float(row["seconds"]) > 0
        assert row["device"] == "cpu" and row["model"] == tiny_checkpoint_3d.name
        assert row["fused"] == f"{name}/fused.nii.gz" and row["stability"] == ""
        fused = nib.load(out / name / "fused.nii.gz")
        assert fused.shape == (24, 24, 20)
        np.testing.assert_allclose(fused.affine, nib.load(folder / name / "t1c.nii.gz").affine)
        record = read_provenance(out / name)
        assert record["request"]["model_sha256"] == row["model_sha256"]
    engines = {}
    for name in GOOD:
        run = read_provenance(out / name)["run"]
        engines.setdefault(run["worker"], set()).add(run["engine"])
        assert run["torch_threads"] == 1
    assert len(engines) == 2 and all(len(ids) == 1 for ids in engines.values())
    assert not (out / "bad").exists()
    assert _no_leftovers(out) == []


def test_rerun_skips_what_is_done_and_redoes_the_fixed_case(
    first_run, cluster_client, tiny_checkpoint_3d: Path
) -> None:
    folder, manifest, _, _ = first_run
    out = folder / "out"
    stamps = {name: (out / name / "fused.nii.gz").stat().st_mtime_ns for name in GOOD}
    again = fuse_cohort(
        manifest, out, client=cluster_client, model=tiny_checkpoint_3d, device="cpu", progress=False
    )
    assert [o.status for o in again.outcomes] == ["skipped"] * 4 + ["failed"]
    assert all(again.outcomes[i].device == "cpu" for i in range(4))
    assert stamps == {name: (out / name / "fused.nii.gz").stat().st_mtime_ns for name in GOOD}

    fixed = folder / "fixed.csv"
    fixed.write_text(manifest.read_text().replace("bad/flair.nii.gz", "p0/flair.nii.gz"))
    repaired = fuse_cohort(
        fixed, out, client=cluster_client, model=tiny_checkpoint_3d, device="cpu", progress=False
    )
    assert [o.status for o in repaired.outcomes] == ["skipped"] * 4 + ["done"]
    assert repaired.exit_code == 0 and _summary(out)["bad"]["status"] == "done"
    assert _no_leftovers(out) == []


def test_partial_run_then_the_whole_cohort(
    tmp_path: Path, first_run, cluster_client, tiny_checkpoint_3d: Path
) -> None:
    """A run of the first two cases, then of all five: the two are skipped, the rest run."""
    folder, manifest, _, _ = first_run
    cases = read_manifest(manifest).cases
    partial = fuse_cohort(
        cases[:2],
        tmp_path / "out",
        client=cluster_client,
        model=tiny_checkpoint_3d,
        device="cpu",
        progress=False,
    )
    assert [o.status for o in partial.outcomes] == ["done", "done"] and partial.exit_code == 0
    whole = fuse_cohort(
        cases, tmp_path / "out", client=cluster_client, model=tiny_checkpoint_3d, device="cpu", progress=False
    )
    assert [o.status for o in whole.outcomes] == ["skipped", "skipped", "done", "done", "failed"]
    for name in GOOD:  # the same fusion whichever run made it
        np.testing.assert_array_equal(
            np.asarray(nib.load(tmp_path / "out" / name / "fused.nii.gz").dataobj),
            np.asarray(nib.load(folder / "out" / name / "fused.nii.gz").dataobj),
        )


def test_an_interrupted_run_keeps_what_finished(
    tmp_path: Path, first_run, cluster_client, tiny_checkpoint_3d: Path
) -> None:
    """Ctrl-C (here raised by the progress callback after the first case) cancels the rest, writes the
    summary with the unfinished cases ``pending``, leaves no temporary file nor lock, and re-raises; the
    rerun skips the finished case."""
    _, manifest, _, _ = first_run

    def interrupt(outcome) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        fuse_cohort(
            manifest, out, client=cluster_client, model=tiny_checkpoint_3d, device="cpu", progress=interrupt
        )
    _wait_until_idle(cluster_client)
    statuses = [row["status"] for row in _summary(out).values()]
    assert len(statuses) == 5 and statuses.count("pending") >= 3
    assert set(statuses) <= {"done", "failed", "pending"}
    assert not (out / LOCK_NAME).exists()
    finished = {name for name, row in _summary(out).items() if row["status"] == "done"}
    resumed = fuse_cohort(
        manifest, out, client=cluster_client, model=tiny_checkpoint_3d, device="cpu", progress=False
    )
    skipped = {o.case for o in resumed.outcomes if o.status == "skipped"}
    assert finished <= skipped and resumed.count("done") + len(skipped) == 4
    assert _no_leftovers(out) == []


def test_one_worker_and_two_give_identical_outputs(
    tmp_path: Path, first_run, tiny_checkpoint_3d: Path
) -> None:
    """A run on its own local cluster of one worker (started and closed by fuse_cohort) writes the same
    fused volumes as the two-worker run, voxel for voxel."""
    folder, manifest, _, _ = first_run
    result = fuse_cohort(
        manifest, tmp_path / "out", workers=1, model=tiny_checkpoint_3d, device="cpu", progress=False
    )
    assert result.workers == 1 and result.count("done") == 4 and result.exit_code == 1
    assert len({o.worker for o in result.outcomes if o.status == "done"}) == 1
    for name in GOOD:
        np.testing.assert_array_equal(
            np.asarray(nib.load(tmp_path / "out" / name / "fused.nii.gz").dataobj),
            np.asarray(nib.load(folder / "out" / name / "fused.nii.gz").dataobj),
        )


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(tmp_path: Path, cluster_client, tiny_checkpoint_3d: Path) -> None:
    """A worker process killed (as by the out-of-memory killer) after the first case finishes: its case
    is retried elsewhere, every case ends done (or found complete), no temporary file is left."""
    manifest = write_cohort(tmp_path / "data", bad=False)
    cases = read_manifest(manifest).cases
    many = [CohortCase(f"{c.name}-{k}", c.inputs, c.modalities) for k in range(3) for c in cases]
    killed = []
    pids = cluster_client.run(os.getpid)

    def kill_one_worker(outcome) -> None:
        if not killed:
            address = next(a for a, tasks in cluster_client.processing().items() if tasks)
            os.kill(pids[address], signal.SIGKILL)
            killed.append(address)

    result = fuse_cohort(
        many,
        tmp_path / "out",
        client=cluster_client,
        model=tiny_checkpoint_3d,
        device="cpu",
        stability=True,
        progress=kill_one_worker,
    )
    # a case the killed worker had finished (outputs and record written) but not yet reported is found
    # complete by its retry: "skipped" (finished before, outputs verified), as good as "done"
    statuses = [o.status for o in result.outcomes]
    assert killed and len(statuses) == len(many) and set(statuses) <= {"done", "skipped"}, result.failed
    assert statuses.count("skipped") <= 1 and result.exit_code == 0
    assert _no_leftovers(tmp_path / "out") == []
    cluster_client.wait_for_workers(2, timeout=60)


def test_argument_checks_and_worker_count_rule(tmp_path: Path, monkeypatch) -> None:
    manifest = write_cohort(tmp_path, bad=False)
    for options, message in (
        ({"workers": 2, "scheduler": "tcp://x:1"}, "at most one of workers"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"overlap": 1.0}, "overlap must lie in"),
        ({"patch_size": "big"}, "patch size must be"),
    ):
        with pytest.raises(ValueError, match=message):
            fuse_cohort(manifest, tmp_path / "out", **options)
    with pytest.raises(ValueError, match="neither an address"):
        _connect(distributed, tmp_path / "no-such-scheduler.json")

    import napari_isfl.cohort.run as run

    monkeypatch.setattr(run, "_usable_cores", lambda: 16)
    monkeypatch.setattr(run, "_visible_gpus", lambda device: 0)
    assert default_worker_count("cpu", cases=100, available_gb=64.0) == 16
    assert default_worker_count("cpu", cases=100, available_gb=9.0) == 4  # 2 GB per worker
    assert default_worker_count("cpu", cases=3, available_gb=64.0) == 3
    assert default_worker_count("cpu", cases=100, threads=4, available_gb=64.0) == 4
    assert default_worker_count("cpu", cases=100, available_gb=0.5) == 1
    monkeypatch.setattr(run, "_visible_gpus", lambda device: 2)
    assert default_worker_count("auto", cases=100, available_gb=64.0) == 2


def test_two_concurrent_runs_share_a_cluster(
    tmp_path: Path, first_run, cluster_client, tiny_checkpoint_3d
) -> None:
    """Two cohorts run at once on one cluster (two notebook threads, or two users): each keeps its own
    worker plugin (neither replaces nor removes the other's) and both finish."""
    from concurrent.futures import ThreadPoolExecutor

    _, manifest, _, _ = first_run

    def run(name: str):
        return fuse_cohort(
            manifest,
            tmp_path / name,
            client=cluster_client,
            model=tiny_checkpoint_3d,
            device="cpu",
            progress=False,
        )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, ["a", "b"]))
    for result in results:
        assert [o.status for o in result.outcomes] == ["done"] * 4 + ["failed"]
    assert not any(name.startswith("isfl-cohort-") for name in cluster_client.run(_plugin_names).popitem()[1])


def _plugin_names(dask_worker) -> list[str]:
    return list(dask_worker.plugins)
