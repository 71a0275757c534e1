"""Robustness results: summaries over cases, the markdown report, and the CSV/JSON/PNG outputs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import STANDARD_METRICS
from ..perturbations import get_family
from .plots import plot_family, plot_grid, save_montage
from .run import MontageRecord, rounded_row

__all__ = [
    "load_rows",
    "markdown_report",
    "pooled_psnr",
    "report_from_csv",
    "summarize_robustness",
    "write_outputs",
]


def _numeric_keys(rows: Sequence[dict]) -> list[str]:
    skip = {"level", "seed", "target_index", "parameter"}
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if (
                key not in skip
                and key not in keys
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                keys.append(key)
    return keys


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def pooled_psnr(values: Sequence[float], peak: float = 255.0) -> float:
    """PSNR of the mean squared error behind PSNR values: finite unless every image pair was identical.

    A plain mean of PSNRs is infinite as soon as one perturbation left a fusion unchanged (a truncated
    slab of pure background); pooling the MSE keeps the summary meaningful.
    """
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        return math.nan
    mse = float(np.mean([0.0 if math.isinf(v) else peak**2 / 10.0 ** (v / 10.0) for v in finite]))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak**2 / mse)


def summarize_robustness(rows: Sequence[dict]) -> list[dict]:
    """Mean of every numeric column per (family, level, target kind, method) over cases and targets.

    Clean rows form the family ``clean``. Each entry also counts its rows (``n``). PSNR columns are
    pooled (:func:`pooled_psnr`) instead of averaged.
    """
    keys = _numeric_keys(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["level"], row["target"], row["method"]), []).append(row)
    summary = []
    for (family, level, target, method), members in groups.items():
        entry: dict[str, Any] = {
            "family": family,
            "level": level,
            "parameter": members[0]["parameter"],
            "target": target,
            "method": method,
            "n": len(members),
        }
        for key in keys:
            values = [m.get(key, math.nan) for m in members]
            if key.endswith("_psnr"):
                entry[key] = pooled_psnr([v for v in values if isinstance(v, (int, float))])
            else:
                entry[key] = _mean(values)
        summary.append(entry)
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _delta(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value) and not math.isinf(value):
        return f"{value:+.3f}"
    return _fmt(value)


def _family_columns(family: str) -> list[tuple[str, str]]:
    columns = [(f"delta_{k}", f"Δ{k}") for k in STANDARD_METRICS]
    columns += [("fid_ssim", "fid SSIM"), ("fid_psnr", "fid PSNR")]
    if family == "truncation":
        columns += [
            ("out_ssim", "out SSIM"),
            ("out_psnr", "out PSNR"),
            ("fill_corr", "fill r"),
            ("fill_corr_clean", "fill r clean"),
        ]
    if family == "dropout":
        columns += [("rest_ssim", "rest SSIM"), ("rest_corr", "rest r"), ("rest_corr_clean", "rest r clean")]
    return columns


def _pivot(
    summary: Sequence[dict], key: str, methods: Sequence[str], families: Sequence[str], levels: Sequence[int]
) -> list[str]:
    """Family x method table of ``key`` (one-modality targets, mean over the given levels); bold = best.

    For a plain metric (not a change or fidelity) the first row holds the clean-input values.
    """
    lines = ["| family | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    table = {(r["family"], r["method"], r["level"]): r for r in summary if r["target"] == "one"}
    table |= {("clean", r["method"], 0): r for r in summary if r["family"] == "clean"}
    with_clean = key in STANDARD_METRICS
    for family in (["clean"] if with_clean else []) + list(families):
        levels_here = [0] if family == "clean" else levels
        values = [
            _mean(
                [table[(family, m, lv)].get(key, math.nan) for lv in levels_here if (family, m, lv) in table]
            )
            for m in methods
        ]
        finite = [v for v in values if not math.isnan(v)]
        best = max(finite) if finite else math.nan
        cells = [
            (
                f"**{_delta(v) if key.startswith('delta') else _fmt(v)}**"
                if v == best
                else (_delta(v) if key.startswith("delta") else _fmt(v))
            )
            for v in values
        ]
        label = "*clean inputs*" if family == "clean" else family
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


#: the measures of robustness (stability) and of quality under perturbation compared between two methods
STABILITY_MEASURES = ("fid_ssim", "fid_psnr", *(f"delta_{k}" for k in ("MI", "SCD", "VIF", "Qabf", "SSIM")))
QUALITY_MEASURES = ("MI", "SCD", "VIF", "Qabf", "SSIM")


def _comparison(
    summary: Sequence[dict],
    first: str,
    second: str,
    families: Sequence[str],
    levels: Sequence[int],
    measures: Sequence[str] = STABILITY_MEASURES,
) -> list[str]:
    """Per family: on how many (level, measure) pairs ``first`` beats ``second`` (one-modality targets)."""
    table = {(r["family"], r["method"], r["level"]): r for r in summary if r["target"] == "one"}
    lines = [f"| family | {first} better than {second} | of | where {first} is worse |", "|---|---|---|---|"]
    total_won = total = 0
    for family in families:
        won, count, worse = 0, 0, []
        for level in levels:
            a, b = table.get((family, first, level)), table.get((family, second, level))
            if a is None or b is None or level == 0:
                continue
            for key in measures:
                x, y = a.get(key, math.nan), b.get(key, math.nan)
                if math.isnan(x) or math.isnan(y) or x == y:
                    continue
                count += 1
                if x > y:
                    won += 1
                else:
                    worse.append(f"{key.replace('delta_', 'Δ')}@{level}")
        total_won += won
        total += count
        lines.append(f"| {family} | {won} | {count} | {', '.join(worse) or '–'} |")
    lines.append(f"| **all** | **{total_won}** | **{total}** | |")
    return lines


def markdown_report(rows: Sequence[dict], summary: Sequence[dict], info: dict[str, Any]) -> str:
    """The Markdown report: setup, headline tables, clean scores and one table per family."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if f != "clean"]
    levels = sorted({int(r["level"]) for r in rows if r["family"] != "clean" and int(r["level"]) > 0})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    parts = [
        "# Robustness benchmark\n",
        f"Data: `{info.get('data', '?')}`; {len(cases)} case(s): " + ", ".join(f"`{c}`" for c in cases) + ".",
        f"Methods: {', '.join(methods)}. Families: {', '.join(families)}. Levels: "
        f"{', '.join(map(str, sorted({int(r['level']) for r in rows if r['family'] != 'clean'})))}. "
        f"Seed {info.get('seed', '?')}; 3D crop: {info.get('crop_3d') or 'none'}.",
    ]
    for label, model in (info.get("models") or {}).items():
        parts.append(f"- {label}: `{model['path']}` (sha256 {model['sha256'][:12]})")
    parts += [
        "",
        "Conventions: the nine standard metrics are computed against the **clean** sources (8-bit scale; "
        "MI in bits, VIF and SSIM summed over sources, VIF/Qabf per axial slice for volumes); `Δ` = "
        "perturbed minus clean-input value of the same method. `fid SSIM`/`fid PSNR` = SSIM/PSNR (dB, "
        "peak 255) of the perturbed-input fusion against the same method's clean-input fusion. Truncation: "
        "`out` = the same restricted to outside the removed slab; `fill r` = correlation, inside the slab's "
        "foreground, of the fusion with the unperturbed modality (mean of the others), `fill r clean` the "
        "same for the clean fusion. Dropout: `rest` = fidelity to the remaining modality (SSIM, Pearson r). "
        "Targets: `one` = each modality perturbed in turn (mean over modalities and cases), `all` = every "
        "modality at once. Note: noise inflates EN, SD, SF and AG, so a positive Δ there is not a gain; "
        "the source-referenced metrics (MI, SCD, VIF, Qabf, SSIM) and the fidelities measure robustness.",
        "",
        f"## Headline (one-modality targets, mean over levels {', '.join(map(str, levels))})\n",
        "Fidelity to the clean-input fusion, SSIM (higher = more stable; bold = best):\n",
        *_pivot(summary, "fid_ssim", methods, families, levels),
        "",
        "Qabf of the perturbed-input fusion against the clean sources (first row: clean inputs; a stable "
        "method with a poor clean fusion loses little because it had little; read with this table):\n",
        *_pivot(summary, "Qabf", methods, families, levels),
        "",
        "Change of Qabf against the clean sources (higher = more edge information kept):\n",
        *_pivot(summary, "delta_Qabf", methods, families, levels),
        "",
        "VIF of the perturbed-input fusion against the clean sources (first row: clean inputs):\n",
        *_pivot(summary, "VIF", methods, families, levels),
        "",
        "Change of VIF against the clean sources:\n",
        *_pivot(summary, "delta_VIF", methods, families, levels),
        "",
    ]
    if "isfl" in methods and "isfl-noiv" in methods:
        parts += [
            "ISFL against its twin trained without interventions. Stability: measures (fid SSIM, fid PSNR, "
            "ΔMI, ΔSCD, ΔVIF, ΔQabf, ΔSSIM) x levels on which ISFL is higher:\n",
            *_comparison(summary, "isfl", "isfl-noiv", families, levels),
            "",
            "Quality under perturbation: metrics (MI, SCD, VIF, Qabf, SSIM against the clean sources) x "
            "levels on which ISFL is higher:\n",
            *_comparison(summary, "isfl", "isfl-noiv", families, levels, QUALITY_MEASURES),
            "",
        ]
    clean = [r for r in summary if r["family"] == "clean"]
    parts += [
        "## Clean inputs\n",
        "| method | n | " + " | ".join(STANDARD_METRICS) + " |",
        "|---|---|" + "---|" * len(STANDARD_METRICS),
    ]
    for r in clean:
        parts.append(
            f"| {r['method']} | {r['n']} | " + " | ".join(_fmt(r.get(k)) for k in STANDARD_METRICS) + " |"
        )
    for family in families:
        fam = get_family(family)
        columns = _family_columns(family)
        parts += [
            "",
            f"## {family}\n",
            f"{fam.description} Levels: {fam.parameter} = {fam.levels}.\n",
            "| level | target | method | n | " + " | ".join(label for _, label in columns) + " |",
            "|---|---|---|---|" + "---|" * len(columns),
        ]
        entries = [r for r in summary if r["family"] == family]
        entries.sort(key=lambda r: (r["level"], r["target"] != "one", methods.index(r["method"])))
        for r in entries:
            cells = [
                (_delta(r.get(k, math.nan)) if k.startswith("delta") else _fmt(r.get(k, math.nan)))
                for k, _ in columns
            ]
            parts.append(
                f"| {r['level']} ({r['parameter']}) | {r['target']} | {r['method']} | {r['n']} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(parts) + "\n"


def _write_csv(rows: Sequence[dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_outputs(
    rows: Sequence[dict],
    output: str | Path,
    info: dict[str, Any],
    montages: Sequence[MontageRecord] = (),
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``robustness.csv``, ``summary.csv``, ``summary.md``, ``run.json``, plots and montages.

    Returns:
        The written files by role (``csv``, ``summary_csv``, ``markdown``, ``run``, ``plot:<family>``,
        ``grid``, ``montage:<family>``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = summarize_robustness(rows)
    written = {
        "csv": _write_csv(rows, output / "robustness.csv"),
        "summary_csv": _write_csv([rounded_row(r) for r in summary], output / "summary.csv"),
    }
    (output / "summary.md").write_text(markdown_report(rows, summary, info))
    written["markdown"] = output / "summary.md"
    (output / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    written["run"] = output / "run.json"
    if plots:
        for family in dict.fromkeys(r["family"] for r in rows):
            if family != "clean":
                written[f"plot:{family}"] = plot_family(summary, family, output / "plots" / f"{family}.png")
        written["grid"] = plot_grid(summary, output / "plots" / "grid.png")
    for record in montages:
        written[f"montage:{record.family}"] = save_montage(
            record, output / "montages" / f"{record.family}.png"
        )
    return written


_TEXT_COLUMNS = ("task", "case", "method", "family", "target", "target_modality", "parameter")
_INT_COLUMNS = ("level", "target_index", "seed")


def load_rows(path: str | Path) -> list[dict]:
    """Read a ``robustness.csv`` back with its numbers as numbers (``inf``/``nan`` included)."""
    rows = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key in _TEXT_COLUMNS or text == "":
                    row[key] = text
                elif key in _INT_COLUMNS:
                    row[key] = int(text)
                else:
                    row[key] = float(text)
            rows.append(row)
    return rows


def report_from_csv(output: str | Path, plots: bool = True) -> dict[str, Path]:
    """Rewrite the summary, Markdown report and plots of a finished run from its ``robustness.csv``.

    Montages need the images and are left as they are. ``run.json`` supplies the setup lines.
    """
    output = Path(output)
    info_path = output / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return write_outputs(load_rows(output / "robustness.csv"), output, info, plots=plots)
