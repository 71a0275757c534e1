"""What a robustness benchmark run does: methods, perturbation families, levels, cases, and its options
on the command line (``isfl benchmark robustness``, ``benchmarks/robustness.py``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..baselines import BASELINES
from ..perturbations import PERTURBATIONS, get_family

__all__ = [
    "DEFAULT_CASES",
    "DEFAULT_CROP_3D",
    "DEFAULT_LEVELS",
    "ISFL_METHODS",
    "METHODS",
    "RobustnessOptions",
    "add_arguments",
    "options_from_args",
    "validate_options",
]

#: the ISFL methods: the shipped model and its twin trained without interventions
ISFL_METHODS = ("isfl", "isfl-noiv")
METHODS = (*ISFL_METHODS, *BASELINES)
DEFAULT_LEVELS = (1, 2, 3)
DEFAULT_CASES = 8
DEFAULT_CROP_3D = 64
QUICK_FAMILIES = ("gaussian_noise", "bias_field", "truncation", "dropout")
QUICK_LEVELS = (1, 3)
QUICK_CASES = 2
QUICK_CROP_3D = 48


@dataclass
class RobustnessOptions:
    """What one benchmark run does (see :func:`add_arguments` for the command-line names)."""

    methods: list[str]
    families: list[str]
    levels: list[int]
    model: str = "default"
    baseline_model: str | None = None
    cases: int | None = DEFAULT_CASES
    crop_3d: int | None = DEFAULT_CROP_3D
    seed: int = 0
    device: str = "cpu"
    montages: bool = True
    montage_case: int = 0
    lesion_guard: str = "auto"

    def __post_init__(self) -> None:
        validate_options(self)


def validate_options(options: RobustnessOptions) -> None:
    """Check an options object; raises ValueError with a message naming the bad value and the valid ones."""
    if not options.methods:
        raise ValueError("no method given; use --methods with isfl, isfl-noiv and/or " + ", ".join(BASELINES))
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; valid methods: {', '.join(METHODS)}")
    if len(set(options.methods)) != len(options.methods):
        raise ValueError(f"methods listed twice: {options.methods}")
    if "isfl-noiv" in options.methods and not options.baseline_model:
        raise ValueError(
            "method isfl-noiv needs --baseline-model (the checkpoint of ISFL trained without interventions, "
            "e.g. runs/final/isfl2d_no_interventions/model.pt)"
        )
    if not options.families:
        raise ValueError("no perturbation family given; valid families: " + ", ".join(PERTURBATIONS))
    for family in options.families:
        get_family(family)  # raises with the list of valid names
    if len(set(options.families)) != len(options.families):
        raise ValueError(f"families listed twice: {options.families}")
    if not options.levels:
        raise ValueError("no severity level given; valid levels are 0..3 (0 = identity)")
    for family in options.families:
        for level in options.levels:
            get_family(family).check_level(level)
    if len(set(options.levels)) != len(options.levels):
        raise ValueError(f"levels listed twice: {options.levels}")
    if options.cases is not None and options.cases < 1:
        raise ValueError(f"--cases must be >= 1, got {options.cases}")
    if options.crop_3d is not None and options.crop_3d != 0 and options.crop_3d < 16:
        raise ValueError(f"--crop-3d must be 0 (no crop) or >= 16 voxels, got {options.crop_3d}")
    if options.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {options.seed}")
    if options.montage_case < 0:
        raise ValueError(f"--montage-case must be >= 0, got {options.montage_case}")
    if options.lesion_guard not in ("auto", "off"):
        raise ValueError(f"--lesion-guard must be auto or off, got {options.lesion_guard!r}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _levels(text: str) -> list[int]:
    values = []
    for part in _split(text):
        try:
            values.append(int(part))
        except ValueError:
            raise ValueError(f"--levels takes comma-separated integers 0..3, got {part!r}") from None
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``isfl benchmark robustness`` and ``benchmarks/robustness.py``)."""
    parser.add_argument(
        "data", help="folder (Harvard layout TASK/MODALITY/NAME.png) or CSV of co-registered sets"
    )
    parser.add_argument(
        "--data-root", help="folder the CSV's image paths are relative to (default: the CSV's)"
    )
    parser.add_argument(
        "--model", default="default", help="ISFL model: 'default', a shipped name or a checkpoint"
    )
    parser.add_argument(
        "--baseline-model", help="checkpoint of ISFL trained without interventions (isfl-noiv)"
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated from {', '.join(METHODS)} "
        "(default: isfl, isfl-noiv when --baseline-model is given, lp, dwt, gff)",
    )
    parser.add_argument("--families", help=f"comma-separated from {', '.join(PERTURBATIONS)} (default: all)")
    parser.add_argument("--levels", help="comma-separated severity levels 0..3 (default 1,2,3; 0 = identity)")
    parser.add_argument(
        "--cases", type=int, help=f"cases, spread over tasks (default {DEFAULT_CASES}; 0 = all)"
    )
    parser.add_argument(
        "--crop-3d",
        type=int,
        help=f"crop volumes to at most N voxels per axis (default {DEFAULT_CROP_3D}; 0 = no crop)",
    )
    parser.add_argument("--seed", type=int, default=0, help="perturbation seed (default 0)")
    parser.add_argument("--device", default="cpu", help="device of the ISFL models (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--montage-case", type=int, default=0, help="index of the selected case shown in montages"
    )
    parser.add_argument(
        "--no-montages", action="store_true", help="write no montages (e.g. unlicensed images)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument(
        "--lesion-guard",
        choices=("auto", "off"),
        default="auto",
        help="ISFL's lesion guard as isfl fuse has it (auto, the default: acts on an input whose file name "
        "says FLAIR) or off (the learned blend alone)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a few minutes: {QUICK_CASES} cases, families {', '.join(QUICK_FAMILIES)}, levels "
        f"{','.join(map(str, QUICK_LEVELS))}, 3D crop {QUICK_CROP_3D} (explicit options still win)",
    )
    parser.add_argument("--output", default="robustness", help="output folder (default ./robustness)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def options_from_args(args: argparse.Namespace) -> RobustnessOptions:
    """Options from parsed arguments, with the ``--quick`` and default subsets filled in."""
    quick = bool(getattr(args, "quick", False))
    if args.methods is not None:
        methods = _split(args.methods)
    else:
        methods = ["isfl", *(["isfl-noiv"] if args.baseline_model else []), "lp", "dwt", "gff"]
    if args.families is not None:
        families = list(PERTURBATIONS) if args.families.strip() == "all" else _split(args.families)
    else:
        families = list(QUICK_FAMILIES if quick else PERTURBATIONS)
    levels = (
        _levels(args.levels) if args.levels is not None else list(QUICK_LEVELS if quick else DEFAULT_LEVELS)
    )
    cases = args.cases if args.cases is not None else (QUICK_CASES if quick else DEFAULT_CASES)
    crop = args.crop_3d if args.crop_3d is not None else (QUICK_CROP_3D if quick else DEFAULT_CROP_3D)
    if cases < 0:
        raise ValueError(f"--cases must be >= 0 (0 = all), got {cases}")
    if crop < 0:
        raise ValueError(f"--crop-3d must be >= 0 (0 = no crop), got {crop}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return RobustnessOptions(
        methods=methods,
        families=families,
        levels=levels,
        model=args.model,
        baseline_model=args.baseline_model,
        cases=cases or None,
        crop_3d=crop or None,
        seed=args.seed,
        device=args.device,
        montages=not args.no_montages,
        montage_case=args.montage_case,
        lesion_guard=getattr(args, "lesion_guard", "auto"),
    )
