"""Cohort manifests: the CSV (``case`` then one column per input) and the BIDS glob rule, and the
one-line errors of a bad manifest. No Dask, no torch: files are empty placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_isfl.cohort.manifest import CohortCase, bids_manifest, check_case_name, read_manifest


def _csv(folder: Path, text: str, name: str = "cohort.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_csv_paths_are_relative_to_the_csv_and_columns_tag_modalities(tmp_path: Path) -> None:
    """Paths resolve against the CSV's folder (absolute ones are kept); comment and blank lines are
    skipped; a column named ct/pet tags its input, MRI contrasts (t1c, flair) and unknown names are mri;
    a byte-order mark from a spreadsheet does not break the header."""
    absolute = tmp_path / "elsewhere" / "p02_pet.nii.gz"
    manifest = read_manifest(
        _csv(
            tmp_path,
            "\ufeffcase,t1c,pet,ct,extra\n# a comment\n\np01,p01/t1c.nii.gz,p01/pet.nii.gz,ct.nii,x.nii.gz\n"
            f"p02 , p02/t1c.nii.gz , {absolute} ,ct.nii,x.nii.gz\n",
        )
    )
    assert [c.name for c in manifest.cases] == ["p01", "p02"]
    assert manifest.columns == ["t1c", "pet", "ct", "extra"]
    assert manifest.modalities == ["mri", "pet", "ct", "mri"]
    first, second = manifest.cases
    assert first.inputs[0] == tmp_path.resolve() / "p01" / "t1c.nii.gz"
    assert second.inputs[1] == absolute and second.source == "cohort.csv:5"
    assert first.output_suffix == ".nii.gz" and not first.problem


def test_modality_option_overrides_the_column_names(tmp_path: Path) -> None:
    path = _csv(tmp_path, "case,a,b\nx,a.nii.gz,b.nii.gz\n")
    assert read_manifest(path).modalities == ["mri", "mri"]
    assert read_manifest(path, ["MRI", "spect"]).cases[0].modalities == ("mri", "spect")


def test_an_empty_cell_fails_that_case_only(tmp_path: Path) -> None:
    manifest = read_manifest(_csv(tmp_path, "case,t1c,flair\nok,a.nii.gz,b.nii.gz\nhole,a.nii.gz,\n"))
    assert manifest.cases[0].problem == ""
    assert manifest.cases[1].problem == "no flair file given in cohort.csv:3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty manifest"),
        ("name,t1c,flair\nx,a,b\n", "the header must be 'case'"),
        ("case,t1c\nx,a\n", "at least two"),
        ("case,t1c,T1C\nx,a,b\n", "distinct, non-empty names"),
        ("case,t1c,flair\nx,a\n", "cohort.csv:2: 2 cells but the header has 3"),
        ("case,t1c,flair\nP1,a,b\np1,c,d\n", "cohort.csv:3: case 'p1' repeats line 2"),
        ("case,t1c,flair\n../up,a,b\n", "cohort.csv:2: case name '../up' cannot be a folder name"),
        ("case,t1c,flair\n.hidden,a,b\n", "cannot be a folder name"),
        ("case,t1c,flair\nsummary.csv,a,b\n", "not 'summary.csv'"),
        ("case,t1c,flair\n", "no cases below the header"),
    ],
)
def test_bad_csv_manifests_are_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        read_manifest(_csv(tmp_path, text))
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_modality_option_errors(tmp_path: Path) -> None:
    path = _csv(tmp_path, "case,a,b\nx,a.nii.gz,b.nii.gz\n")
    with pytest.raises(ValueError, match="1 modality tags for 2 inputs"):
        read_manifest(path, ["mri"])
    with pytest.raises(ValueError, match="unknown modality 'xray'"):
        read_manifest(path, ["mri", "xray"])
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        read_manifest(tmp_path / "missing.csv")


def test_case_names_and_output_types() -> None:
    assert check_case_name("sub-01_ses-1.a", "here") == "sub-01_ses-1.a"
    for bad in ("", "a/b", "a b", "-x", "x" * 201):
        with pytest.raises(ValueError, match="here: case name"):
            check_case_name(bad, "here")
    suffixes = [
        CohortCase("c", (Path(f"a{s}"), Path("b")), ("mri", "mri")).output_suffix
        for s in (".nii", ".nii.gz", ".PNG", ".jpg", ".tiff", ".dcm")
    ]
    assert suffixes == [".nii.gz", ".nii.gz", ".png", ".png", ".tif", ".nii.gz"]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_bids_rule_sessions_missing_inputs_and_entities(tmp_path: Path) -> None:
    """One case per subject or subject/session with every input (anat/ and pet/), sessions lacking one
    listed in the notes, several matching files make the case fail with the fix, entities choose."""
    _touch(
        tmp_path,
        "dataset_description.json",
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_FLAIR.nii.gz",
        "sub-01/anat/sub-01_T1w.json",  # sidecars are not images
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii",
        "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz",  # no FLAIR: left out
        "sub-03/anat/sub-03_run-1_T1w.nii.gz",
        "sub-03/anat/sub-03_run-2_T1w.nii.gz",
        "sub-03/anat/sub-03_FLAIR.nii.gz",
        "sub-03/pet/sub-03_trc-FDG_pet.nii.gz",
        "derivatives/sub-01/anat/sub-01_T1w.nii.gz",
    )
    manifest = bids_manifest(tmp_path, ["T1w", "FLAIR"])
    assert [c.name for c in manifest.cases] == ["sub-01", "sub-02_ses-1", "sub-03"]
    assert manifest.notes == ["sub-02/ses-2: no FLAIR"]
    assert manifest.modalities == ["mri", "mri"]
    sub01, sub02, sub03 = manifest.cases
    assert [p.name for p in sub01.inputs] == ["sub-01_T1w.nii.gz", "sub-01_FLAIR.nii.gz"]
    assert sub02.inputs[0].name == "sub-02_ses-1_T1w.nii" and sub02.source == "sub-02/ses-1"
    assert "2 files match T1w" in sub03.problem and "--inputs run-1_T1w" in sub03.problem

    chosen = bids_manifest(tmp_path, ["run-2_T1w", "FLAIR", "pet"])
    assert [c.name for c in chosen.cases] == ["sub-03"]
    assert chosen.cases[0].inputs[0].name == "sub-03_run-2_T1w.nii.gz" and not chosen.cases[0].problem
    assert chosen.modalities == ["mri", "mri", "pet"]
    assert len(chosen.notes) == 3  # sub-01, sub-02/ses-1 and sub-02/ses-2 have no PET


def test_bids_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such BIDS folder"):
        bids_manifest(tmp_path / "absent", ["T1w", "FLAIR"])
    with pytest.raises(ValueError, match="two or more suffixes"):
        bids_manifest(tmp_path, ["T1w"])
    with pytest.raises(ValueError, match="no sub-\\* folders"):
        bids_manifest(tmp_path, ["T1w", "FLAIR"])
    _touch(tmp_path, "sub-01/anat/sub-01_T1w.nii.gz")
    with pytest.raises(ValueError, match="no subject or session has every input"):
        bids_manifest(tmp_path, ["T1w", "flair"])
    with pytest.raises(ValueError, match="give a suffix"):
        bids_manifest(tmp_path, ["T1w", "bad-entity-"])


@pytest.mark.parametrize(
    "name", ["napari_isfl.cohort.manifest", "napari_isfl.cohort.resume", "napari_isfl.cohort.run"]
)
def test_docstring_examples_run(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0
