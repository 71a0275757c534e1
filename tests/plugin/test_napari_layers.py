"""fuse_layers and its steps on napari's ViewerModel (no Qt, no display): geometry, provenance, updates,
co-registration errors and resampling, 2D and 3D, two and three layers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Layer  # noqa: E402

import napari_isfl  # noqa: E402
from napari_isfl.plugin.layers import (  # noqa: E402
    METADATA_KEY,
    compute_fusion,
    layer_world_affine,
    prepare_fusion,
    world_affine,
)
from napari_isfl.plugin.reader import read_nifti  # noqa: E402
from napari_isfl.spatial import (  # noqa: E402
    CoregistrationError,
    display_orientation,  # noqa: E402
    is_orthogonal,
    resample_to_grid,
)

SPATIAL = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


def _viewer_with(files) -> ViewerModel:
    viewer = ViewerModel()
    for layer_data in read_nifti(list(files)):
        viewer.add_layer(Layer.create(*layer_data))
    return viewer


def _phantom(shape, seed=0, offset=0.0) -> np.ndarray:
    """A smooth blob plus noise: foreground everywhere a fusion test looks."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    blob = np.exp(-sum((g - offset) ** 2 for g in grids) * 2.0)
    return (100 * blob + 5 * rng.random(shape) + 1).astype(np.float32)


def _assert_same_placement(output: Image, reference: Image) -> None:
    np.testing.assert_allclose(output.scale, reference.scale)
    np.testing.assert_allclose(output.translate, reference.translate)
    np.testing.assert_allclose(output.rotate, reference.rotate)
    np.testing.assert_allclose(output.shear, reference.shear)
    np.testing.assert_allclose(output.affine.affine_matrix, reference.affine.affine_matrix)
    assert output.units == reference.units
    assert output.axis_labels == reference.axis_labels
    np.testing.assert_allclose(layer_world_affine(output), layer_world_affine(reference))


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari's own note on the sheared layer
def test_world_affine_matches_napari_transform():
    layer = Image(
        np.zeros((4, 5, 6)),
        scale=(1.5, 0.7, 2.0),
        translate=(3.0, -2.0, 10.0),
        rotate=(20.0, 0.0, -35.0),
        shear=(0.1, 0.0, 0.2),
        affine=np.array([[0, 1, 0, 5], [1, 0, 0, -4], [0, 0, -1, 2], [0, 0, 0, 1.0]]),
    )
    matrix = layer_world_affine(layer)
    for point in [(0, 0, 0), (1, 2, 3), (3.5, -1, 7)]:
        expected = layer.data_to_world(point)
        np.testing.assert_allclose(matrix @ [*point, 1.0], [*expected, 1.0], atol=1e-9)
    assert not is_orthogonal(matrix)  # the shear
    assert is_orthogonal(world_affine((1.0, 2.0), (5.0, 5.0), 30.0))


def test_fuse_layers_3d_two_layers_keeps_reference_geometry(tcga_crop_files, tiny_checkpoint_3d):
    viewer = _viewer_with([tcga_crop_files["t1c"], tcga_crop_files["flair"]])
    t1c, flair = viewer.layers
    outputs = napari_isfl.fuse_layers(t1c, flair, model=str(tiny_checkpoint_3d), device="cpu")

    assert len(outputs) == 1
    data, kwargs, layer_type = outputs[0]
    assert layer_type == "image"
    assert data.shape == t1c.data.shape == (20, 28, 24)  # shown axial: (S, P, L) of a (x, y, z) file
    assert data.dtype == np.float32 and data.min() >= 0.0 and data.max() <= 1.0
    assert kwargs["name"] == "TCGA-DU-7294_t1c + TCGA-DU-7294_flair fused"
    assert kwargs["colormap"] == "gray" and tuple(kwargs["contrast_limits"]) == (0.0, 1.0)
    fused = Layer.create(*outputs[0])
    _assert_same_placement(fused, t1c)
    assert [str(u) for u in fused.units] == ["millimeter"] * 3 and fused.axis_labels == ("S", "P", "L")

    provenance = kwargs["metadata"][METADATA_KEY]
    assert provenance["role"] == "fused"
    assert provenance["inputs"] == [t1c.name, flair.name]
    assert provenance["modalities"] == ["mri", "mri"]
    assert provenance["model"] == tiny_checkpoint_3d.name and len(provenance["model_sha256"]) == 64
    assert provenance["device"] == "cpu" and provenance["version"] == napari_isfl.__version__
    assert provenance["parameters"]["overlap"] == 0.25
    assert provenance["reference_layer"] == t1c.name and provenance["resampled_layers"] == []
    # the reference's NIfTI geometry travels with the output (the writer needs it); its source does not
    assert provenance["nifti"] == t1c.metadata[METADATA_KEY]["nifti"]
    assert "source" not in provenance
    # the input layers are untouched
    assert METADATA_KEY in t1c.metadata and t1c.metadata[METADATA_KEY].get("role") is None


def test_fuse_layers_2d_three_layers_with_maps(tiny_checkpoint_2d):
    viewer = ViewerModel()
    shape = (40, 36)
    kwargs = {"scale": (0.8, 0.8), "translate": (10.0, -4.0), "units": ("mm", "mm")}
    mri = viewer.add_image(_phantom(shape, 0), name="T1 MRI", **kwargs)
    ct = viewer.add_image(_phantom(shape, 1, 0.2) * 20 - 1000, name="head CT", **kwargs)
    pet = viewer.add_image(_phantom(shape, 2, -0.3), name="FDG PET", **kwargs)
    layers = napari_isfl.fuse_layers(
        mri,
        ct,
        pet,
        viewer=viewer,
        model=str(tiny_checkpoint_2d),
        device="cpu",
        stability=True,
        contributions=True,
        overlay=True,
        name="fused",
    )
    names = [layer.name for layer in layers]
    assert names == [
        "fused",
        "fused overlay FDG PET",
        "fused stability",
        "fused contribution T1 MRI",
        "fused contribution head CT",
        "fused contribution FDG PET",
    ]
    assert all(layer in viewer.layers for layer in layers)
    for layer in layers:
        assert layer.data.shape == shape
        _assert_same_placement(layer, mri)
    fused, overlay, stability, *contributions = layers
    assert fused.metadata[METADATA_KEY]["modalities"] == ["mri", "ct", "pet"]
    assert overlay.colormap.name == "inferno" and overlay.blending == "additive" and overlay.opacity < 1
    np.testing.assert_array_equal(overlay.data, pet.data)
    # the maps do not cover the fusion: hidden until asked for, translucent, a colour bar for their scale
    assert stability.colormap.name == "viridis" and stability.blending == "translucent"
    assert not stability.visible and stability.colorbar.visible
    assert stability.contrast_limits[0] == 0.0 and stability.contrast_limits[1] > 0.0
    assert len({c.colormap.name for c in contributions}) == 3
    assert not any(c.visible for c in contributions) and all(c.colorbar.visible for c in contributions)
    np.testing.assert_allclose(sum(c.data for c in contributions), 1.0, atol=1e-4)
    assert [c.metadata[METADATA_KEY]["contribution_of"] for c in contributions] == [
        "T1 MRI",
        "head CT",
        "FDG PET",
    ]


def test_rerun_updates_outputs_instead_of_adding_copies(tiny_checkpoint_2d):
    viewer = ViewerModel()
    a = viewer.add_image(_phantom((32, 30), 0), name="MRI")
    b = viewer.add_image(_phantom((32, 30), 1), name="PET")
    first = napari_isfl.fuse_layers(a, b, viewer=viewer, model=str(tiny_checkpoint_2d), device="cpu")
    first[0].colormap = "viridis"  # a display choice the user made
    second = napari_isfl.fuse_layers(
        a, b, viewer=viewer, model=str(tiny_checkpoint_2d), device="cpu", overlap=0.5
    )
    assert len(viewer.layers) == 3
    assert second[0] is first[0]
    assert second[0].metadata[METADATA_KEY]["parameters"]["overlap"] == 0.5
    assert second[0].colormap.name == "viridis"

    # a user's own layer of that name is never overwritten: napari gives the output a fresh name
    viewer.layers.remove(second[0])
    mine = viewer.add_image(np.zeros((32, 30)), name="MRI + PET fused")
    third = napari_isfl.fuse_layers("MRI", "PET", viewer=viewer, model=str(tiny_checkpoint_2d), device="cpu")
    assert third[0] is not mine and np.all(mine.data == 0) and len(viewer.layers) == 4


def test_mismatched_layers_raise_a_clear_error():
    viewer = ViewerModel()
    reference = viewer.add_image(_phantom((20, 22, 18)), name="T1", scale=(1, 1, 1))
    shifted = viewer.add_image(_phantom((20, 22, 18)), name="FLAIR", translate=(2, 0, 0))
    other_shape = viewer.add_image(_phantom((20, 22, 17)), name="T2")
    other_spacing = viewer.add_image(_phantom((20, 22, 18)), name="PD", scale=(2, 1, 1))
    flat = viewer.add_image(_phantom((22, 18)), name="slice")
    labels = viewer.add_labels(np.zeros((20, 22, 18), np.uint8), name="mask")

    with pytest.raises(CoregistrationError, match=r"'FLAIR'.*'T1'.*origin.*resample=True"):
        prepare_fusion([reference, shifted])
    with pytest.raises(CoregistrationError, match=r"'T2'.*shape"):
        prepare_fusion([reference, other_shape])
    with pytest.raises(CoregistrationError, match=r"'PD'.*voxel size \(2\.0, 1\.0, 1\.0\) vs") as info:
        prepare_fusion([reference, other_spacing])
    assert "np.float64" not in str(info.value)  # plain numbers, not numpy reprs
    with pytest.raises(CoregistrationError, match=r"2D.*3D"):
        prepare_fusion([reference, flat], resample=True)
    with pytest.raises(TypeError, match="Labels"):
        prepare_fusion([reference, labels])
    with pytest.raises(ValueError, match="twice"):
        prepare_fusion([reference, reference])
    with pytest.raises(ValueError, match="at least two"):
        prepare_fusion([reference])
    assert len(viewer.layers) == 6  # nothing added


def test_resample_path_puts_layers_on_the_reference_grid(tiny_checkpoint_3d):
    viewer = ViewerModel()
    volume = _phantom((24, 28, 20))
    spacing = (1.2, 1.0, 1.5)
    reference = viewer.add_image(volume, name="T1", scale=spacing, translate=(5.0, 0.0, -3.0))
    # the same anatomy, cropped: its first voxel sits 3 voxels (3.6 mm) further along axis 0
    cropped = viewer.add_image(volume[3:], name="FLAIR", scale=spacing, translate=(5.0 + 3 * 1.2, 0.0, -3.0))

    request = prepare_fusion([reference, cropped], resample=True)
    assert request.needs_resample == [False, True]
    on_grid = resample_to_grid(
        cropped.data, request.world_affines[1], request.reference_shape, request.world_affines[0]
    )
    np.testing.assert_allclose(on_grid[3:], volume[3:], atol=1e-4)
    np.testing.assert_allclose(on_grid[:3], volume[3:].min())  # outside the field of view: background

    with pytest.raises(CoregistrationError):
        napari_isfl.fuse_layers(
            reference, cropped, viewer=viewer, model=str(tiny_checkpoint_3d), device="cpu"
        )
    assert len(viewer.layers) == 2
    fused, *_ = napari_isfl.fuse_layers(
        reference, cropped, viewer=viewer, model=str(tiny_checkpoint_3d), device="cpu", resample=True
    )
    assert fused.data.shape == volume.shape
    _assert_same_placement(fused, reference)
    assert fused.metadata[METADATA_KEY]["resampled_layers"] == ["FLAIR"]


def test_overlay_without_functional_input_warns(tiny_checkpoint_2d):
    a = Image(_phantom((24, 20), 0), name="T1")
    b = Image(_phantom((24, 20), 1), name="T2")
    with pytest.warns(UserWarning, match="no input is tagged PET or SPECT"):
        outputs = napari_isfl.fuse_layers(
            [a, b], model=str(tiny_checkpoint_2d), device="cpu", overlay=True, modalities=["mri", None]
        )
    assert len(outputs) == 1


def test_sheared_reference_warns_and_is_copied(tiny_checkpoint_2d):
    a = Image(_phantom((24, 20), 0), name="MRI", shear=(0.3,))
    b = Image(_phantom((24, 20), 1), name="PET", shear=(0.3,))
    with pytest.warns(UserWarning, match="non-orthogonal"):
        request = prepare_fusion([a, b])
    (data, kwargs, _), *_ = compute_fusion(request, model=str(tiny_checkpoint_2d), device="cpu")
    np.testing.assert_allclose(kwargs["shear"], a.shear)


def test_rgb_layer_is_fused_as_its_luminance(tiny_checkpoint_2d):
    grey = _phantom((24, 20), 0)
    rgb = np.clip(np.stack([grey, grey * 0.5, grey * 0.2], axis=-1), 0, 255).astype(np.uint8)
    mri = Image(grey, name="MRI")
    pet = Image(rgb, name="PET colour", rgb=True)
    request = prepare_fusion([mri, pet])
    assert request.rgb == [False, True] and request.modalities == ["mri", "pet"]
    (data, _, _), *_ = compute_fusion(request, model=str(tiny_checkpoint_2d), device="cpu")
    assert data.shape == (24, 20)


def test_importing_the_package_and_plugin_modules_stays_light():
    code = (
        "import sys, napari_isfl\n"
        "napari_isfl.fuse_layers\n"
        "import napari_isfl.plugin.reader, napari_isfl.plugin.writer, napari_isfl.plugin.sample_data\n"
        "heavy = [m for m in ('torch', 'monai', 'napari', 'qtpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari on the rotated layer
def test_cli_and_layers_resample_to_the_same_array(tmp_path, tiny_checkpoint_3d):
    """``isfl fuse --resample`` (files) and the widget's resample (layers) run one resampler on the same
    matrices: the same fused array, bit for bit, for an input that is shifted, rotated and coarser, and
    outside its field of view filled with its own minimum (not 0) in both."""
    import nibabel as nib

    from core_helpers import write_nifti
    from napari_isfl.inference import fuse_files

    reference = np.diag([1.0, 1.0, 1.0, 1.0])
    reference[:3, 3] = (-10.0, -12.0, -8.0)
    angle = np.deg2rad(7.0)
    moving = np.eye(4)
    moving[:3, :3] = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    ) @ np.diag([1.2, 1.1, 1.5])
    moving[:3, 3] = (-8.5, -13.0, -6.0)
    ct_like = _phantom((18, 20, 12), seed=1) - 1000.0  # a background far below 0, as CT in HU
    first = write_nifti(tmp_path / "t1.nii.gz", _phantom((20, 22, 16)), reference)
    second = write_nifti(tmp_path / "ct.nii.gz", ct_like, moving)

    out = tmp_path / "fused.nii.gz"
    fuse_files(
        [first, second], out, ["mri", "ct"], resample=True, model=str(tiny_checkpoint_3d), device="cpu"
    )
    from_files = np.asarray(nib.load(out).dataobj)

    layers = [Layer.create(*data) for data in read_nifti([first, second])]
    from_layers = napari_isfl.fuse_layers(
        *layers, modalities=["mri", "ct"], resample=True, model=str(tiny_checkpoint_3d), device="cpu"
    )[0][0]
    assert from_files.shape == (20, 22, 16)
    np.testing.assert_array_equal(display_orientation(reference, from_files)[0], from_layers)

    # the resampled CT itself: its background (not 0) outside its field of view, on both paths
    request = prepare_fusion(layers, ["mri", "ct"], resample=True)
    on_grid = resample_to_grid(
        layers[1].data, request.world_affines[1], request.reference_shape, request.world_affines[0]
    )
    from napari_isfl.io import read_image
    from napari_isfl.spatial import resample_to_reference

    resampled = resample_to_reference(read_image(second), read_image(first))
    np.testing.assert_array_equal(on_grid, display_orientation(reference, resampled.array)[0])
    assert on_grid.min() == pytest.approx(ct_like.min()) and (on_grid == ct_like.min()).any()


def test_outputs_of_axial_layers_are_shown_like_their_inputs(tcga_crop_files, tiny_checkpoint_3d):
    """Reader layers are shown axial; every output (fusion, PET overlay, maps) lies on them voxel for
    voxel, while the fusion itself runs in the files' own order (as the CLI's does)."""
    viewer = _viewer_with([tcga_crop_files["t1c"], tcga_crop_files["flair"]])
    t1c, flair = viewer.layers
    layers = napari_isfl.fuse_layers(
        t1c, flair, modalities=["mri", "pet"], viewer=viewer, model=str(tiny_checkpoint_3d), device="cpu",
        overlay=True, stability=True, contributions=True,
    )  # fmt: skip
    fused, overlay, stability, *contributions = layers
    np.testing.assert_array_equal(overlay.data, flair.data)
    for layer in layers:
        assert layer.data.shape == t1c.data.shape
        _assert_same_placement(layer, t1c)
    background = (t1c.data <= t1c.data.min()) & (flair.data <= flair.data.min())
    assert (fused.data[background] == 0).all()
