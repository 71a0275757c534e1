"""Pack the training data into a folder small enough to send to a borrowed GPU machine (64 MiB).

Harvard PNGs are copied as they are. NIfTI volumes are normalised with the same per-modality rule
training uses (napari_isfl.normalization) and stored as 8-bit NIfTI on their original grid and affine;
training normalises them again, which maps them back to [0, 1] up to 8-bit quantisation (< 0.2 %).
The shipped models' cards say which runs used this packed copy.

    python scripts/pack_training_data.py ../shared/data .carry/data \
        configs/volumes_train.csv configs/volumes_val.csv [--no-harvard]

``--no-harvard`` packs the volumes alone (23 MiB instead of 42): with the repository (about 20 MiB) and
the wheels a 3D-only GPU run needs (about 10 MiB), the Harvard images would push the transfer over 64 MiB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_isfl.cases import cases_from_csv
from napari_isfl.normalization import normalize_intensity


def main(source: str, target: str, *csv_files: str, harvard: bool = True) -> None:
    source_root, target_root = Path(source).resolve(), Path(target)
    if harvard:
        shutil.copytree(source_root / "harvard", target_root / "harvard", dirs_exist_ok=True)
    done: set[Path] = set()
    for csv_file in csv_files:
        for case in cases_from_csv(csv_file, source_root):
            for path, modality in zip(case.images, case.modalities, strict=True):
                if path in done:
                    continue
                done.add(path)
                image = nib.load(path)
                normalised, _ = normalize_intensity(np.asanyarray(image.dataobj), modality, name=str(path))
                header = image.header.copy()
                header.set_data_dtype(np.uint8)
                header.set_slope_inter(1.0, 0.0)
                packed = nib.Nifti1Image(np.rint(normalised * 255).astype(np.uint8), image.affine, header)
                out = target_root / path.relative_to(source_root)
                out.parent.mkdir(parents=True, exist_ok=True)
                nib.save(packed, out)
    size = sum(p.stat().st_size for p in target_root.rglob("*") if p.is_file())
    extra = " + harvard" if harvard else ""
    print(f"packed {len(done)} volumes{extra} into {target_root}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--no-harvard"]
    main(*arguments, harvard="--no-harvard" not in sys.argv[1:])
