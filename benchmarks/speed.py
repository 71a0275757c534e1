"""Time and peak memory of ``napari_isfl.fuse`` (and classical baselines) per image size.

Each measurement runs in a fresh child process, so the peak resident memory (``ru_maxrss``) belongs
to that one fusion: the figure reported is the child's peak minus its resident size just before the
fusion started (model loaded, inputs in memory). On CUDA the peak GPU memory is
``torch.cuda.max_memory_allocated``.

Examples::

    # the issue-2 budget: two-modality 240x240x155 volume, CPU, 2 threads, default model
    python benchmarks/speed.py --device cpu --threads 2 --case brats
    # a size sweep on synthetic volumes, with the DWT baseline in the same run
    python benchmarks/speed.py --device cpu --threads 2 --sizes 256x256 128x128x128 240x240x155 \\
        --baselines dwt
    # GPU, mixed precision
    python benchmarks/speed.py --device cuda --sizes 128x128x128 256x256x256 512x512x512
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REAL_CASES = {
    # the real volumes need ../shared/data; "sample" uses the bundled (cropped) TCGA case
    "brats": [
        "volumes/brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz",
        "volumes/brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz",
    ],
}


def synthetic(shape: tuple[int, ...], count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random 'anatomy' inside an ellipsoid, one image per modality (content barely matters)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.8
    images = []
    for _ in range(count):
        small = rng.random(tuple(max(4, s // 8) for s in shape)).astype(np.float32)
        from scipy.ndimage import zoom

        field = zoom(small, [s / q for s, q in zip(shape, small.shape, strict=True)], order=1)[
            tuple(slice(0, s) for s in shape)
        ]
        images.append((gaussian_filter(field, 1.0) * inside * 1000).astype(np.float32))
    return images


def _load_inputs(spec: dict) -> list[np.ndarray]:
    if spec["case"]:
        from napari_isfl.io import read_image

        root = Path(spec["data_root"])
        return [read_image(root / p).array for p in REAL_CASES[spec["case"]]]
    shape = tuple(int(v) for v in spec["size"].split("x"))
    return synthetic(shape, spec["modalities"])


def _child(spec: dict, queue: mp.Queue) -> None:
    try:
        import torch

        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        images = _load_inputs(spec)
        method = spec["method"]
        if method == "isfl":
            from napari_isfl.inference import FusionEngine
            from napari_isfl.inference.windows import parse_patch_size

            engine = FusionEngine(spec["model"], spec["device"])
            device = engine.device
            engine.loaded_model(images[0].ndim)  # loading is not part of the timed fusion

            def run() -> dict:
                result = engine.fuse(
                    images,
                    ["mri"] * len(images),
                    # the files' names, as `isfl fuse` passes them: the lesion guard finds the FLAIR by them
                    names=[Path(p).name for p in REAL_CASES.get(spec["case"] or "", [])] or None,
                    crop_foreground=spec["crop"],
                    amp=spec["amp"],
                    roi_size=parse_patch_size(spec["patch_size"]),
                )
                return {"windows": result.provenance["windows"]}
        else:
            from napari_isfl.evaluation.baselines import fuse_baseline
            from napari_isfl.normalization import normalize_intensity

            normalised = [normalize_intensity(im, "mri")[0] for im in images]
            device = None

            def run() -> dict:
                fuse_baseline(method, normalised)
                return {}

        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times, info = [], {}
        for i in range(spec["repeat"] + 1):  # the first run warms up and is not counted
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            info = run()
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize()
            if i > 0 or spec["repeat"] == 0:
                times.append(time.perf_counter() - start)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        voxels = int(np.prod(images[0].shape))
        row = (
            {
                "method": method,
                "input": spec["case"] or spec["size"],
                "shape": "x".join(map(str, images[0].shape)),
                "modalities": len(images),
                "device": str(device) if device is not None else "cpu",
                "threads": spec["threads"] or "",
                "seconds": round(statistics.median(times), 3),
                "megavoxels_per_s": round(voxels / statistics.median(times) / 1e6, 3),
                "peak_rss_gb": round(peak_rss / 2**20, 3),
                "fusion_rss_gb": round((peak_rss - base_rss) / 2**20, 3),
                "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)
                if device is not None and device.type == "cuda"
                else "",
                "crop_foreground": spec["crop"],
            }
            | (
                {"patch_size": spec["patch_size"]}
                if method == "isfl" and spec["patch_size"] != "auto"
                else {}
            )
            | info
        )
        queue.put(row)
    except Exception as error:  # report, do not hang the parent
        queue.put({"error": f"{type(error).__name__}: {error}", "input": spec["case"] or spec["size"]})


def make_spec(
    method: str,
    *,
    case: str | None = None,
    size: str | None = None,
    modalities: int = 2,
    device: str = "cpu",
    threads: int = 2,
    model: str = "default",
    repeat: int = 1,
    crop: bool = True,
    patch_size: str = "auto",
    amp: bool = True,
    data_root: str | Path = ".",
) -> dict:
    """Everything one child measurement reads (one builder for speed.py and scaling.py)."""
    if (case is None) == (size is None):
        raise ValueError("give exactly one of case (a real case) and size (a synthetic AxB[xC] shape)")
    return {
        "case": case,
        "size": size,
        "modalities": modalities,
        "method": method,
        "device": device if method == "isfl" else "cpu",  # the baselines run on the CPU
        "threads": threads,
        "model": model,
        "repeat": repeat,
        "crop": crop,
        "patch_size": patch_size,
        "amp": amp,
        "data_root": str(data_root),
    }


def measure(spec: dict) -> dict:
    """One measurement in a fresh child process; a child that dies (killed for memory) gives an error row."""
    import queue as queue_module

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(spec, queue))
    process.start()
    while True:
        try:
            row = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                row = {
                    "error": f"child process died (exit code {process.exitcode})",
                    "input": spec["case"] or spec["size"],
                }
                break
    process.join()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="*", default=[], help="synthetic sizes, e.g. 256x256 128x128x128")
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        choices=sorted(REAL_CASES),
        help="real co-registered case(s) from --data-root",
    )
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--modalities", nargs="*", type=int, default=[2], help="numbers of modalities")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--baselines", default="", help="comma-separated baselines timed in the same run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-crop", action="store_true", help="disable the foreground crop")
    parser.add_argument("--patch-size", default="auto", help="ISFL sliding-window size: auto, training, N")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--csv", help="append the rows to this CSV")
    args = parser.parse_args(argv)

    import torch

    print(
        f"# machine: {platform.processor() or platform.machine()}, {mp.cpu_count()} CPUs, python "
        f"{platform.python_version()}, torch {torch.__version__}"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print("# command: python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    methods = ["isfl"] + [m for m in args.baselines.split(",") if m]
    options = {
        "device": args.device,
        "threads": args.threads,
        "model": args.model,
        "repeat": args.repeat,
        "crop": not args.no_crop,
        "patch_size": args.patch_size,
        "amp": not args.no_amp,
        "data_root": args.data_root,
    }
    specs = []
    for case in args.case:
        specs += [make_spec(m, case=case, **options) for m in methods]
    for size in args.sizes:
        for count in args.modalities:
            specs += [make_spec(m, size=size, modalities=count, **options) for m in methods]
    rows = []
    for spec in specs:
        row = measure(spec)
        rows.append(row)
        print(json.dumps(row), flush=True)
    good = [r for r in rows if "error" not in r]
    if good:
        keys = list(good[0])
        print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        for r in good:
            print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    if args.csv and good:
        path = Path(args.csv)
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(good[0]), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(good)
    return 1 if len(good) < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
