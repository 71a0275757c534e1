"""``isfl cohort`` on ../shared/data volumes (24^3 crops of five patients from three datasets), arranged
once as a CSV manifest and once as a BIDS tree in a temporary folder: the CSV run reports its bad case
and exits 1, the BIDS run (sessions included) exits 0, and the two fuse the same data identically."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cohort_helpers import crop_nifti

from core_helpers import SHARED_DATA
from napari_isfl.cli import main

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent"),
]
pytest.importorskip("distributed")

VOLUMES = SHARED_DATA / "volumes"
#: case -> (T1c, FLAIR) of one co-registered patient, and the start of a 24^3 crop inside its brain
PATIENTS = {
    "tcga-du-7294": (
        "brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz",
        "brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz",
    ),
    "tcga-fg-6692": (
        "brats/TCGA-FG-6692/OtherEXampleFromTCIA_t1c_bet.nii.gz",
        "brats/TCGA-FG-6692/OtherEXampleFromTCIA_fla_bet.nii.gz",
    ),
    "brats-gli-00001": (
        "brats/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz",
        "brats/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz",
    ),
    "brats2013-0001": (
        "brats2013/brats_2013_pat0001_1/t1c.nii.gz",
        "brats2013/brats_2013_pat0001_1/flair.nii.gz",
    ),
    "mslub-07": ("mslub/patient07/t1post.nii.gz", "mslub/patient07/flair.nii.gz"),
}
START = {"mslub-07": (79, 97, 79)}  # MNI 182x218x182; the BraTS grids are 240x240x155
SIZE = (24, 24, 24)


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("shared_crops")
    made = {}
    for case, (t1c, flair) in PATIENTS.items():
        start = START.get(case, (108, 108, 66))
        made[case] = tuple(
            crop_nifti(VOLUMES / source, start, SIZE, folder / case / f"{role}.nii.gz")
            for role, source in (("t1c", t1c), ("flair", flair))
        )
    return made


def _rows(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "summary.csv", newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_csv_and_bids_cohorts_of_shared_volumes(
    tmp_path: Path, crops, cluster_client, tiny_checkpoint_3d: Path
) -> None:
    common = ["--scheduler", cluster_client.scheduler.address, "--model", str(tiny_checkpoint_3d), "-q"]
    # CSV: paths relative to the CSV; a sixth case mixes a BraTS T1c with an MNI-space FLAIR (not one grid)
    manifest = tmp_path / "csv" / "cohort.csv"
    manifest.parent.mkdir()
    lines = ["case,t1c,flair"] + [f"{case},{t1c},{flair}" for case, (t1c, flair) in crops.items()]
    lines.append(f"mixed,{crops['brats2013-0001'][0]},{crops['mslub-07'][1]}")
    manifest.write_text("\n".join(lines) + "\n")
    assert main(["cohort", str(manifest), "-o", str(tmp_path / "csv_out"), *common]) == 1
    rows = _rows(tmp_path / "csv_out")
    assert [rows[c]["status"] for c in PATIENTS] == ["done"] * 5
    assert rows["mixed"]["status"] == "failed" and "not on the voxel grid" in rows["mixed"]["error"]

    # BIDS: one subject per patient, the MS patient with two sessions (the second lacks FLAIR: left out)
    bids = tmp_path / "bids"
    (bids / "dataset_description.json").parent.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "crops", "BIDSVersion": "1.9.0"}')
    for index, (case, (t1c, flair)) in enumerate(crops.items(), start=1):
        session = "ses-1/" if case == "mslub-07" else ""
        prefix = f"sub-{index:02d}" + ("_ses-1" if session else "")
        anat = bids / f"sub-{index:02d}" / session / "anat"
        anat.mkdir(parents=True)
        (anat / f"{prefix}_ce-gd_T1w.nii.gz").symlink_to(t1c)
        (anat / f"{prefix}_FLAIR.nii.gz").symlink_to(flair)
        if session:
            lone = bids / f"sub-{index:02d}" / "ses-2" / "anat"
            lone.mkdir(parents=True)
            (lone / f"sub-{index:02d}_ses-2_ce-gd_T1w.nii.gz").symlink_to(t1c)
    bids_out = tmp_path / "bids_out"
    assert (
        main(["cohort", "--bids", str(bids), "--inputs", "ce-gd_T1w,FLAIR", "-o", str(bids_out), *common])
        == 0
    )
    rows = _rows(bids_out)
    assert list(rows) == ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05_ses-1"]
    assert {row["status"] for row in rows.values()} == {"done"}
    for index, case in enumerate(PATIENTS, start=1):
        name = f"sub-{index:02d}" + ("_ses-1" if case == "mslub-07" else "")
        bids_fused = nib.load(bids_out / name / "fused.nii.gz")
        csv_fused = nib.load(tmp_path / "csv_out" / case / "fused.nii.gz")
        np.testing.assert_array_equal(np.asarray(bids_fused.dataobj), np.asarray(csv_fused.dataobj))
        np.testing.assert_allclose(bids_fused.affine, nib.load(crops[case][0]).affine)
