"""Property-based tests (hypothesis) of the I/O, geometry and normalisation on random shapes, dtypes,
affines and intensities: what holds for every input, not just the ones a person thought of."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_isfl.io import image_writer, read_image
from napari_isfl.normalization import DEFAULT_SPECS, IntensitySpec, normalize_intensity
from napari_isfl.outputs import OutputError, OutputPlan
from napari_isfl.spatial import check_coregistration, resample_to_grid

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
shapes = st.one_of(
    st.tuples(st.integers(2, 9), st.integers(2, 9)),
    st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 7)),
)


@st.composite
def affines(draw) -> np.ndarray:
    """A rotation (QR of a random matrix, with a possible flip), positive spacings and an origin."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing = draw(st.lists(st.floats(0.05, 8.0), min_size=3, max_size=3))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = draw(st.lists(st.floats(-500, 500), min_size=3, max_size=3))
    return affine


@st.composite
def volumes(draw):
    shape = draw(shapes)
    dtype = draw(DTYPES)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -(2**20)), min(int(info.max), 2**20))
    else:
        elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@SETTINGS
@given(array=volumes(), affine=affines(), gz=st.booleans())
def test_nifti_round_trip_keeps_voxels_dtype_and_geometry(array, affine, gz) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("v.nii.gz" if gz else "v.nii")
        nib.save(nib.Nifti1Image(array, affine), path)
        image = read_image(path)
        expected = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
        assert image.array.dtype == array.dtype
        np.testing.assert_array_equal(image.array, expected)
        np.testing.assert_allclose(image.affine, affine, atol=1e-4)
        check_coregistration([image, read_image(path)])  # a file is on its own grid


@SETTINGS
@given(array=volumes(), affine=affines())
def test_written_fusion_takes_the_reference_geometry(array, affine) -> None:
    """Whatever the reference: the float32 output lands on its grid, values in [0, 1] kept exactly."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "ref.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), source)
        reference = read_image(source)
        fused = np.linspace(0, 1, reference.array.size, dtype=np.float32).reshape(reference.array.shape)
        out = Path(folder) / "fused.nii.gz"
        OutputPlan({"fused": out}, [source]).write({"fused": image_writer(out, fused, reference)})
        back = read_image(out)
        np.testing.assert_array_equal(back.array, fused)
        np.testing.assert_allclose(back.affine, reference.affine, atol=1e-4)


@SETTINGS
@given(
    array=volumes(),
    modality=st.sampled_from(["mri", "ct", "pet", "spect"]),
    method=st.sampled_from([None, "percentile", "robust_max", "minmax", "window"]),
)
def test_normalisation_maps_into_unit_range_or_refuses_clearly(array, modality, method) -> None:
    spec = None
    if method == "window":
        spec = IntensitySpec("window", -100.0, 300.0)
    elif method is not None:
        spec = IntensitySpec(method, DEFAULT_SPECS["mri"].low, 99.0)
    try:
        normalised, info = normalize_intensity(array, modality, spec, "input")
    except ValueError as error:
        assert str(error).startswith("input: ")  # a clear refusal names the input
        return
    assert normalised.shape == array.shape and normalised.dtype == np.float32
    assert np.isfinite(normalised).all() and normalised.min() >= 0 and normalised.max() <= 1
    # a monotone map: the order of any two voxels is kept (ties may form at the clipped ends)
    flat, out = array.ravel().astype(np.float64), normalised.ravel()
    order = np.argsort(flat, kind="stable")
    assert (np.diff(out[order]) >= -1e-6).all()
    assert info["low"] <= info["high"]


@SETTINGS
@given(array=volumes(), affine=affines())
def test_resampling_onto_its_own_grid_is_the_identity(array, affine) -> None:
    ndim = array.ndim
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = affine[:ndim, :ndim]
    matrix[:ndim, ndim] = affine[:ndim, 3]
    resampled = resample_to_grid(array, matrix, array.shape, matrix)
    np.testing.assert_allclose(resampled, array.astype(np.float32), rtol=1e-5, atol=1e-3)


@SETTINGS
@given(
    spelling=st.lists(st.sampled_from([".", "sub/..", "./sub/.."]), min_size=0, max_size=3),
    roles=st.sampled_from([("fused", "stability"), ("fused", "provenance"), ("stability", "provenance")]),
)
def test_two_spellings_of_one_file_are_always_refused(spelling, roles) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "sub").mkdir()
        plain = Path(folder) / "out.json"
        other = Path(folder).joinpath(*spelling, "out.json") if spelling else Path(os.path.relpath(plain))
        with pytest.raises(OutputError, match="same file"):
            OutputPlan({roles[0]: plain, roles[1]: other})
