"""``isfl register``: register one image onto another by mutual information and write it on the reference
grid, in its own units, with the transform if asked."""

from __future__ import annotations

import argparse
import sys

from .fuse import check_inputs


def run(args: argparse.Namespace) -> int:
    from ..outputs import OutputPlan
    from . import progress_line

    check_inputs([args.moving, args.reference])
    plan = OutputPlan(
        {"registered": args.output, "transform": args.save_transform},
        [args.moving, args.reference],
        overwrite=not args.no_overwrite,
    )

    from ..io import NIFTI_SUFFIXES, image_suffix, read_image, value_writer
    from ..registration import register as register_image

    if image_suffix(args.output) not in NIFTI_SUFFIXES:  # an image in its own units: NIfTI only
        raise ValueError(f"{args.output}: the registered image is written as NIfTI; use .nii.gz or .nii")
    moving, reference = read_image(args.moving), read_image(args.reference)

    def report(step) -> None:
        progress_line.update(f"registering: {step}")

    result = register_image(moving, reference, args.transform, threads=args.threads, progress=report)
    progress_line.close()
    writers = {"registered": value_writer(args.output, result.image.array, reference)}
    if args.save_transform:
        writers["transform"] = result.save_transform
    plan.write(writers)
    if not args.quiet:
        print(
            f"wrote {', '.join(str(p) for p in plan.paths)} ({result.seconds:.1f} s, {args.transform}, "
            f"mutual information {result.metric:.3f})",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register one image onto another (rigid or affine, mutual information)",
        description="Register MOVING onto REFERENCE by Mattes mutual information (multi-resolution, on the "
        "CPU; SimpleITK, the clinical extra) and write MOVING on the reference grid, in its own units "
        "(HU, SUV, MR values) as NIfTI. Inputs: NIfTI files or DICOM series (a folder or any file of it). "
        "Stop a long registration with Ctrl-C only between stages: SimpleITK holds the signal while it runs.",
    )
    parser.add_argument("moving", help="the image to move")
    parser.add_argument("reference", help="the image whose grid and position the result takes")
    parser.add_argument("-o", "--output", required=True, help="the registered image (.nii.gz or .nii)")
    parser.add_argument("--transform", choices=("rigid", "affine"), default="rigid", help="default rigid")
    parser.add_argument(
        "--save-transform",
        metavar="T.tfm",
        help="also write the transform (ITK .tfm/.txt, readable by 3D Slicer, ANTs, SimpleITK)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--no-overwrite", action="store_true", help="refuse to replace an existing output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)
