"""``isfl fuse``: fuse co-registered files into one image."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _parse_modalities(text: str | None, count: int) -> list[str] | None:
    if text is None:
        return None
    tags = [t.strip().lower() for t in text.split(",") if t.strip()]
    if len(tags) != count:
        raise ValueError(
            f"--modality lists {len(tags)} tags for {count} inputs; give one per input, e.g. mri,pet"
        )
    return tags


def parse_lesion_guard(text: str, count: int) -> int | str | None:
    """``--lesion-guard``: ``auto``, ``off``, or the number (1 = first) of the input to guard."""
    text = text.strip().lower()
    if text in ("auto", "off"):
        return text
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"--lesion-guard takes auto, off or an input number, got {text!r}") from None
    if not 1 <= number <= count:
        raise ValueError(f"--lesion-guard {number}: give an input number from 1 to {count} (the FLAIR)")
    return number - 1


def check_inputs(paths: Sequence[str]) -> None:
    """Cheap checks before torch loads: every input exists and is a file (or a folder: a DICOM series).

    Raises:
        FileNotFoundError: a missing input.
    """
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")


def run(args: argparse.Namespace) -> int:
    from ..outputs import OutputPlan
    from . import progress_line

    # refuse bad paths before the heavy imports: a mistyped path costs well under a second
    check_inputs(args.inputs)
    modalities = _parse_modalities(args.modality, len(args.inputs))
    lesion_guard = parse_lesion_guard(args.lesion_guard, len(args.inputs))
    outputs = {"fused": args.output, "stability": args.stability, "provenance": args.provenance}
    OutputPlan(outputs, args.inputs, overwrite=not args.no_overwrite)

    from ..inference import fuse_files
    from ..inference.windows import parse_patch_size

    def report(done: int, total: int) -> None:
        progress_line.update(f"fusing: window batch {done}/{total}")

    result = fuse_files(
        args.inputs,
        args.output,
        modalities,
        stability_output=args.stability,
        provenance_output=args.provenance,
        contributions=False,
        resample=args.resample,
        register=args.register,
        color=not args.grey,
        overwrite=not args.no_overwrite,
        model=args.model,
        device=args.device,
        roi_size=parse_patch_size(args.patch_size),
        overlap=args.overlap,
        amp=not args.no_amp,
        crop_foreground=not args.no_crop,
        progress=report,
        lesion_guard=lesion_guard,
        lesion_guard_ratio=args.lesion_guard_ratio,
    )
    progress_line.close()
    if not args.quiet:
        from ..lesions import describe_lesion_guard

        guarded = describe_lesion_guard(result.provenance)
        if guarded:
            print(guarded, file=sys.stderr)
        written = [str(path) for path in (args.output, args.stability, args.provenance) if path]
        print(
            f"wrote {', '.join(written)} ({result.provenance['seconds']:.1f} s on "
            f"{result.provenance['device']}, model {result.provenance['model']})",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="fuse two or more co-registered images or volumes",
        description="Fuse co-registered images (NIfTI volumes, DICOM series, or PNG/TIFF slices) of two or "
        "more modalities (--register or --resample for images that are not on one grid). "
        "The first input is the reference: the output takes its grid, affine and header. NIfTI in gives "
        "float32 NIfTI in [0, 1] out; PNG in gives an 8-bit PNG out.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="input files (two or more)")
    parser.add_argument("-o", "--output", required=True, help="output file (.nii.gz, .nii, .png, .tif)")
    parser.add_argument(
        "--model",
        default="default",
        help="'default', isfl-2d, isfl-3d, isfl-2d-synthesis, or a checkpoint path",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--modality",
        help="comma-separated tags per input: mri, ct, pet, spect (default: guessed "
        "from file names, else mri)",
    )
    parser.add_argument(
        "--stability", metavar="OUT2", help="also write the stability map (test-time interventions)"
    )
    aligning = parser.add_mutually_exclusive_group()
    aligning.add_argument(
        "--resample",
        action="store_true",
        help="resample inputs onto the first input's grid through world coordinates (scans that share them)",
    )
    aligning.add_argument(
        "--register",
        choices=("rigid", "affine"),
        help="register every input onto the first by mutual information, then fuse (scans that moved "
        "between acquisitions; needs the clinical extra)",
    )
    parser.add_argument(
        "--patch-size",
        default="auto",
        help="sliding-window size: auto (the training crop size for images more than twice as large, "
        "else the whole image when it fits), training (always the training crop size), N or N,N,N",
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    parser.add_argument(
        "--lesion-guard",
        default="auto",
        metavar="auto|off|N",
        help="keep the hyperintensities (oedema, MS plaques) of input N (1 = first; auto: the first MRI "
        "input whose file name says FLAIR) at least --lesion-guard-ratio as visible as there, by raising "
        "its share of the coarsest blend level (of every level for lesions of a few voxels) where the "
        "learned blend keeps less (default auto); off: the learned blend as it is",
    )
    parser.add_argument(
        "--lesion-guard-ratio",
        type=float,
        default=0.8,
        metavar="R",
        help="the share of the FLAIR's lesion contrast the fusion keeps, in (0, 1] (default 0.8)",
    )
    parser.add_argument("--grey", action="store_true", help="write grey output even when an input is colour")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    parser.add_argument(
        "--no-crop", action="store_true", help="run on the whole field of view, not the foreground box"
    )
    parser.add_argument("--no-overwrite", action="store_true", help="refuse to replace an existing output")
    parser.add_argument(
        "--provenance", metavar="JSON", help="write the run's provenance (model, hash, parameters)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)
