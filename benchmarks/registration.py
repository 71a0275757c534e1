"""Accuracy and time of ``napari_isfl.registration.register`` and ``napari_isfl.dicom.read_dicom`` on the
real data in ``../shared/data`` (the figures of docs/CLINICAL.md and docs/BENCHMARKS.md).

Parts (``--parts``, all by default):

* ``synthetic``: random rigid transforms (up to 10 degrees about a random axis through the brain's
  centre, up to 15 mm) applied to co-registered pairs (BraTS T1c -> FLAIR, MNI T1 -> CT template, T2 ->
  PET template) by moving the image's affine (no resampling: the truth is exact), and for the BraTS
  pair also by resampling the image on its own grid (interpolated, edges cropped); median and 95th
  percentile displacement of the reference's brain voxels, against the transform itself ("absolute")
  and against the transform composed with the alignment found for the untouched pair ("recovery": the
  MNI templates are offset from one another by 1-3 mm, which no registration undoes).
* ``mslub``: the MSLUB native scans, T1W and T2W onto FLAIR, rigid and affine, against the dataset's own
  ITK transforms, as they are and after an extra known rigid move; the identity's distance to the
  dataset transform is given as the baseline (the scans start almost aligned).
* ``tcga``: the native TCGA-FG-6692 scans onto the BraTS scans of the same patient: mutual information in
  the brain after plain world resampling and after registration.
* ``timing``: a 240 x 240 x 155 rigid (and affine) registration, wall and CPU seconds, ``--repeat`` runs.
* ``dicom``: a 240 x 240 x 155 series written and read back (seconds), and the geometry error of this
  reader and of plain SimpleITK ``ImageSeriesReader`` on an axial, an oblique and a gantry-tilted series.

Timings depend on the machine's load: the run records the load average before and after (``run.json``);
rerun on an idle machine for the published figures.

Examples::

    python benchmarks/registration.py --threads 2 --output docs/benchmarks/registration
    python benchmarks/registration.py --parts timing --repeat 5 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

PARTS = ("synthetic", "mslub", "tcga", "timing", "dicom")
BRATS = "volumes/brats/TCGA-FG-6692/OtherEXampleFromTCIA_"
TEMPLATES = "volumes/templates/"
#: (moving, reference) co-registered pairs of issue 15
PAIRS = {
    "T1c->FLAIR (BraTS TCGA-FG-6692, 1 mm)": (BRATS + "t1c_bet.nii.gz", BRATS + "fla_bet.nii.gz", "nonzero"),
    "T1->CT (MNI templates, 2 mm)": (TEMPLATES + "avg152T1.nii", TEMPLATES + "scct.nii", "tissue"),
    "T2->PET (MNI templates, 2 mm)": (TEMPLATES + "avg152T2.nii", TEMPLATES + "PET.nii", "tissue"),
}
MSLUB_CASES = [("patient01", "study1"), ("patient01", "study2"), ("patient04", "study1")]
#: native TCGA-FG-6692 scan -> the BraTS scan it is registered onto
TCGA_PAIRS = [
    ("fla", "fla"),
    ("t1", "fla"),
    ("t2", "fla"),
    ("t1c", "fla"),
    ("t1", "t1"),
    ("t2", "t2"),
    ("t1c", "t1c"),
]
TIMING_CASE = (
    "volumes/brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz",
    "volumes/brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz",
)


def world_points(image, mask: np.ndarray, stride: int = 7) -> np.ndarray:
    voxels = np.argwhere(mask)[::stride]
    return (image.affine @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def stats(distances: np.ndarray) -> dict:
    return {"median_mm": float(np.median(distances)), "p95_mm": float(np.percentile(distances, 95))}


def synthetic(root: Path, args, rows: list[dict]) -> None:
    from napari_isfl.io import read_image
    from napari_isfl.registration import apply_transform, displacement_mm, random_rigid, register

    for name, (moving_path, reference_path, brain_rule) in PAIRS.items():
        moving, reference = read_image(root / moving_path), read_image(root / reference_path)
        if brain_rule == "nonzero":
            brain = reference.array > 0
        else:
            grey, white = (read_image(root / TEMPLATES / f"sc{t}.nii").array for t in ("grey", "white"))
            brain = grey + white > 0.5
        points = world_points(reference, brain)
        untouched = register(moving, reference, threads=args.threads).reference_to_moving
        own = stats(displacement_mm(untouched, np.eye(4), points))
        print(f"{name}: untouched pair aligned {own['median_mm']:.2f} mm from identity", flush=True)
        # the BraTS pair also with the move applied by resampling (interpolated, cropped at the edges)
        applications = ("affine", "resampled") if brain_rule == "nonzero" else ("affine",)
        for seed, application in ((s, a) for s in range(args.seeds) for a in applications):
            truth = random_rigid(100 + seed, points.mean(axis=0))
            if application == "affine":
                moved = replace(moving, affine=truth @ moving.affine)
            else:  # moved(q) = moving(truth^-1 q) on the moving image's own grid
                moved = apply_transform(moving, moving, np.linalg.inv(truth))
            result, wall, cpu = timed(register, moved, reference, threads=args.threads)
            absolute = stats(displacement_mm(result.reference_to_moving, truth, points))
            recovery = stats(displacement_mm(result.reference_to_moving, truth @ untouched, points))
            row = {
                "part": "synthetic",
                "case": name,
                "applied_by": application,
                "transform": "rigid",
                "seed": 100 + seed,
                "moved_median_mm": stats(displacement_mm(truth, np.eye(4), points))["median_mm"],
                "median_mm": absolute["median_mm"],
                "p95_mm": absolute["p95_mm"],
                "recovery_median_mm": recovery["median_mm"],
                "recovery_p95_mm": recovery["p95_mm"],
                "untouched_offset_mm": own["median_mm"],
                "seconds": wall,
                "cpu_seconds": cpu,
                "iterations": result.iterations,
                "initialization": result.initialization,
            }
            rows.append(row)
            print(row, flush=True)


def mslub(root: Path, args, rows: list[dict]) -> None:
    from skimage.filters import threshold_otsu

    from napari_isfl.io import read_image
    from napari_isfl.registration import displacement_mm, random_rigid, read_transform, register

    for patient, study in MSLUB_CASES:
        folder = root / "volumes" / "mslub_native" / patient
        reference = read_image(folder / f"{study}_FLAIR.nii.gz")
        points = world_points(reference, reference.array > threshold_otsu(reference.array), stride=11)
        for sequence in ("T1W", "T2W"):
            moving = read_image(folder / f"{study}_{sequence}.nii.gz")
            dataset = read_transform(folder / f"{study}_{sequence}_intrastudy_to_FLAIR.txt")
            baseline = stats(displacement_mm(np.eye(4), dataset, points))["median_mm"]
            for transform in ("rigid", "affine"):
                for perturbed in (False, True):
                    extra = random_rigid(31, points.mean(axis=0)) if perturbed else np.eye(4)
                    moved = replace(moving, affine=extra @ moving.affine)
                    result, wall, cpu = timed(register, moved, reference, transform, threads=args.threads)
                    error = stats(displacement_mm(result.reference_to_moving, extra @ dataset, points))
                    row = {
                        "part": "mslub",
                        "case": f"{patient} {study} {sequence}->FLAIR",
                        "transform": transform,
                        "seed": 31 if perturbed else "",
                        "moved_median_mm": baseline
                        if not perturbed
                        else stats(displacement_mm(extra @ dataset, np.eye(4), points))["median_mm"],
                        "median_mm": error["median_mm"],
                        "p95_mm": error["p95_mm"],
                        "seconds": wall,
                        "cpu_seconds": cpu,
                        "iterations": result.iterations,
                        "initialization": result.initialization,
                    }
                    rows.append(row)
                    print(row, flush=True)


def tcga(root: Path, args, rows: list[dict]) -> None:
    from napari_isfl.io import read_image
    from napari_isfl.registration import mutual_information, register
    from napari_isfl.spatial import resample_to_reference

    for native, target in TCGA_PAIRS:
        reference = read_image(root / f"{BRATS}{target}_bet.nii.gz")
        moving = read_image(glob.glob(str(root / "volumes" / "unregistered" / f"*_{native}.nii.gz"))[0])
        brain = reference.array > 0
        plain = mutual_information(resample_to_reference(moving, reference).array, reference.array, brain)
        result, wall, cpu = timed(register, moving, reference, threads=args.threads)
        row = {
            "part": "tcga",
            "case": f"native {native} -> BraTS {target}",
            "transform": "rigid",
            "mi_plain": plain,
            "mi_registered": mutual_information(result.image.array, reference.array, brain),
            "seconds": wall,
            "cpu_seconds": cpu,
            "iterations": result.iterations,
            "initialization": result.initialization,
            "search": json.dumps(result.search),
        }
        rows.append(row)
        print(row, flush=True)


def timing(root: Path, args, rows: list[dict]) -> None:
    from napari_isfl.io import read_image
    from napari_isfl.registration import displacement_mm, random_rigid, register

    moving, reference = (read_image(root / p) for p in TIMING_CASE)
    points = world_points(reference, reference.array > 0)
    truth = random_rigid(7, points.mean(axis=0))
    moved = replace(moving, affine=truth @ moving.affine)
    for transform in ("rigid", "affine"):
        walls, cpus = [], []
        for _ in range(args.repeat):
            result, wall, cpu = timed(register, moved, reference, transform, threads=args.threads)
            walls.append(wall)
            cpus.append(cpu)
        row = {
            "part": "timing",
            "case": f"TCGA-DU-7294 T1c->FLAIR {reference.array.shape}",
            "transform": transform,
            "seconds": statistics.median(walls),
            "cpu_seconds": statistics.median(cpus),
            "seconds_all": " ".join(f"{w:.2f}" for w in walls),
            "iterations": result.iterations,
            "median_mm": stats(displacement_mm(result.reference_to_moving, truth, points))["median_mm"],
        }
        rows.append(row)
        print(row, flush=True)


def _sitk_series_affine(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Plain SimpleITK: GDCM's sorted file names, ImageSeriesReader, geometry from origin/spacing/
    direction (what most tools do)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    uid = reader.GetGDCMSeriesIDs(str(folder))[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _position_error(affine: np.ndarray, truth: np.ndarray, shape) -> float:
    """Largest distance (mm) between where two affines put a corner voxel (the farthest from the origin
    voxel); the slice axis may be reversed, so both orders are tried."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, shape[2] - 1
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    return float(min(np.abs((affine @ f - truth) @ corners.T).max() for f in (np.eye(4), flip)))


def dicom(root: Path, args, rows: list[dict]) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    from napari_isfl.dicom import read_dicom, write_dicom_series
    from napari_isfl.io import ImageData, read_image

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    work = Path(tempfile.mkdtemp(prefix="isfl_dicom_bench_"))
    try:
        volume = read_image(root / f"{BRATS}fla_bet.nii.gz")
        _, write_s, _ = timed(write_dicom_series, volume, work / "full")
        reads = [timed(read_dicom, work / "full")[1] for _ in range(args.repeat)]
        sitk_reads = [timed(_sitk_series_affine, work / "full")[1] for _ in range(args.repeat)]
        row = {
            "part": "dicom",
            "case": f"write+read {volume.array.shape} series",
            "seconds": statistics.median(reads),
            "write_seconds": write_s,
            "sitk_seconds": statistics.median(sitk_reads),
        }
        rows.append(row)
        print(row, flush=True)
        native = glob.glob(str(root / "volumes" / "unregistered" / "*_fla.nii.gz"))[0]
        tilted = np.diag([0.5, 0.5, 2.0, 1.0])
        tilted[1, 2] = 0.6  # 16.7 degrees of gantry tilt
        cases = {
            "axial (BraTS, 1 mm)": (volume.array[:, :, 40:80], volume.affine),
            "oblique (native FLAIR, 0.9 x 0.9 x 5.5 mm)": (
                np.asarray(nib.load(native).dataobj),
                nib.load(native).affine,
            ),
            "gantry tilt 16.7 deg (synthetic CT)": (np.zeros((64, 64, 30), np.int16), tilted),
        }
        for name, (array, affine) in cases.items():
            folder = work / name.split()[0]
            write_dicom_series(ImageData(array, None, "nifti", affine), folder)
            ours = read_dicom(folder)
            sitk_affine, _ = _sitk_series_affine(folder)
            row = {
                "part": "dicom",
                "case": name,
                "isfl_error_mm": _position_error(ours.affine, affine, array.shape),
                "sitk_error_mm": _position_error(sitk_affine, affine, array.shape),
            }
            rows.append(row)
            print(row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def summary(rows: list[dict], run: dict) -> str:
    parts = [
        "# Registration and DICOM benchmark",
        "",
        f"`{run['command']}` on {run['machine']}, {run['threads']} ITK threads; load average "
        f"{run['load_before']} before, {run['load_after']} after ({run['seconds']:.0f} s in all).",
    ]
    columns = {
        "synthetic": [
            "case",
            "applied_by",
            "seed",
            "moved_median_mm",
            "median_mm",
            "p95_mm",
            "recovery_median_mm",
            "untouched_offset_mm",
            "seconds",
            "cpu_seconds",
            "iterations",
        ],
        "mslub": [
            "case",
            "transform",
            "seed",
            "moved_median_mm",
            "median_mm",
            "p95_mm",
            "seconds",
            "iterations",
        ],
        "tcga": ["case", "initialization", "mi_plain", "mi_registered", "seconds", "iterations"],
        "timing": ["case", "transform", "seconds", "cpu_seconds", "seconds_all", "iterations", "median_mm"],
        "dicom": ["case", "seconds", "write_seconds", "sitk_seconds", "isfl_error_mm", "sitk_error_mm"],
    }
    for part, names in columns.items():
        selected = [r for r in rows if r["part"] == part]
        if selected:
            parts += ["", f"## {part}", "", _table(selected, names)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data", help="the shared data folder")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=2, help="ITK threads (default 2)")
    parser.add_argument("--seeds", type=int, default=3, help="random transforms per synthetic pair")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing")
    parser.add_argument("--output", help="folder for results.csv, summary.md and run.json")
    args = parser.parse_args(argv)
    root = Path(args.data_root)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not root.is_dir():
        parser.error(f"{root}: no such folder (pass --data-root)")
    import SimpleITK as sitk

    started = time.perf_counter()
    run = {
        "command": "python benchmarks/registration.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "threads": args.threads,
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "versions": {
            "SimpleITK": sitk.Version.VersionString(),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    rows: list[dict] = []
    for part in parts:
        globals()[part](root, args, rows)
    run["load_after"] = [round(v, 2) for v in os.getloadavg()]
    run["seconds"] = time.perf_counter() - started
    text = summary(rows, run)
    print(text)
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        fields = sorted({key for row in rows for key in row}, key=lambda k: (k not in ("part", "case"), k))
        with open(output / "results.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        (output / "summary.md").write_text(text)
        (output / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
