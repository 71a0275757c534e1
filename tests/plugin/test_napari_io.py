"""NIfTI reader and writer, and the sample data, without Qt: placement in world coordinates, dtype,
metadata, round trips (read, fuse, write, read back) and the plugin manifest's reader/writer/sample
hooks through napari's ViewerModel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Layer  # noqa: E402

import napari_isfl  # noqa: E402
from napari_isfl.plugin.layers import METADATA_KEY, layer_world_affine, prepare_fusion  # noqa: E402
from napari_isfl.plugin.reader import get_reader, read_nifti  # noqa: E402
from napari_isfl.plugin.sample_data import SAMPLE_DIR, mni_ct_flair, tcga_du_7294  # noqa: E402
from napari_isfl.plugin.writer import write_nifti  # noqa: E402
from napari_isfl.spatial import display_orientation  # noqa: E402

TCGA_T1C = SAMPLE_DIR / "tcga_du_7294" / "TCGA-DU-7294_t1c.nii.gz"
MNI_FLAIR = SAMPLE_DIR / "mni_ct_flair" / "mni_flair.nii.gz"
MNI_CT = SAMPLE_DIR / "mni_ct_flair" / "mni_ct.nii.gz"


def _layer(path) -> Image:
    (layer_data,) = read_nifti(path)
    return Layer.create(*layer_data)


def _write(layer: Image, path) -> nib.Nifti1Image:
    data, meta, _ = layer.as_layer_data_tuple()
    assert write_nifti(path, data, meta) == [str(path)]
    return nib.load(path)


def test_get_reader_accepts_nifti_only(tmp_path):
    assert get_reader("brain.nii.gz") is read_nifti
    assert get_reader("brain.NII") is read_nifti
    assert get_reader(["a.nii.gz", "b.nii"]) is read_nifti
    assert get_reader("brain.png") is None
    assert get_reader(["a.nii.gz", "b.tif"]) is None
    assert get_reader("archive.gz") is None


def test_reader_places_the_volume_in_world_coordinates():
    """Axial view (anterior up, the patient's right on the left) with exact world geometry: napari's world
    is the scanner's (S, P, L) = RAS+ (z, -y, -x), every voxel where nibabel puts it."""
    source = nib.load(TCGA_T1C)
    stored = np.asarray(source.dataobj)
    layer = _layer(TCGA_T1C)
    assert layer.name == "TCGA-DU-7294_t1c"
    assert layer.data.dtype == np.int16  # stored dtype kept, no float64 blow-up
    shown, matrix, _ = display_orientation(source.affine, stored)
    np.testing.assert_array_equal(layer.data, shown)
    np.testing.assert_allclose(layer_world_affine(layer), matrix)
    # the displayed axes run inferior->superior, anterior->posterior, right->left
    assert (np.diag(layer_world_affine(layer))[:3] > 0).all()
    assert sorted(layer.scale) == sorted(source.header.get_zooms()[:3])
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert layer.axis_labels == ("S", "P", "L")
    low, high = layer.contrast_limits
    assert 0 <= low < high < float(layer.data.max()) + 1
    namespace = layer.metadata[METADATA_KEY]
    assert namespace["modality"] == "mri" and namespace["source"] == str(TCGA_T1C)
    np.testing.assert_allclose(namespace["nifti"]["affine"], source.affine)
    assert namespace["nifti"]["header"] == source.header.binaryblock
    assert namespace["nifti"]["stored_shape"] == list(source.shape)
    # a stored voxel: its RAS+ position from nibabel, as (z, -y, -x) in napari's world, same value
    voxel = np.array([10, 20, 30])
    x, y, z = nib.affines.apply_affine(source.affine, voxel)
    shown_voxel = np.linalg.inv(matrix) @ np.array([z, -y, -x, 1.0])
    np.testing.assert_allclose(layer.data_to_world(shown_voxel[:3]), (z, -y, -x), atol=1e-6)
    assert layer.data[tuple(np.rint(shown_voxel[:3]).astype(int))] == stored[tuple(voxel)]


def test_reader_scaled_data_becomes_float32():
    layer = _layer(MNI_FLAIR)
    source = nib.load(MNI_FLAIR)
    assert layer.data.dtype == np.float32
    shown = display_orientation(source.affine, source.get_fdata())[0]
    np.testing.assert_allclose(layer.data, shown, rtol=1e-5, atol=1e-4)


def test_reader_refuses_4d_volumes(tmp_path):
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), path)
    with pytest.raises(ValueError, match=r"4D volume.*extract one"):
        read_nifti(path)


def test_round_trip_read_fuse_write_read(tcga_crop_files, tiny_checkpoint_3d, tmp_path):
    t1c, flair = _layer(tcga_crop_files["t1c"]), _layer(tcga_crop_files["flair"])
    source = nib.load(tcga_crop_files["t1c"])
    (data, kwargs, _), *_ = napari_isfl.fuse_layers(t1c, flair, model=str(tiny_checkpoint_3d), device="cpu")
    fused = Layer.create(data, kwargs, "image")

    written = _write(fused, tmp_path / "fused.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.get_data_dtype() == np.float32
    np.testing.assert_array_equal(
        display_orientation(written.affine, written.get_fdata(dtype=np.float32))[0], data
    )
    assert written.header.get_xyzt_units() == source.header.get_xyzt_units()
    assert b"napari-isfl" in written.header["descrip"].tobytes()

    # and back through the reader: same placement, still fusable with the inputs
    back = _layer(tmp_path / "fused.nii.gz")
    np.testing.assert_allclose(layer_world_affine(back), layer_world_affine(t1c))
    prepare_fusion([t1c, back])


def test_writer_keeps_an_input_layer_exact(tcga_crop_files, tmp_path):
    layer = _layer(tcga_crop_files["flair"])
    written = _write(layer, tmp_path / "flair.nii")
    source = nib.load(tcga_crop_files["flair"])
    assert written.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))
    np.testing.assert_array_equal(written.affine, source.affine)


def test_writer_follows_a_moved_layer(tcga_crop_files, tmp_path):
    layer = _layer(tcga_crop_files["t1c"])
    layer.translate = (5.0, 0.0, 2.0)  # moved 5 mm up (S) and 2 mm to the patient's left after reading
    written = _write(layer, tmp_path / "moved.nii.gz")
    expected = nib.load(tcga_crop_files["t1c"]).affine.copy()
    expected[2, 3] += 5.0  # RAS+ z is superior
    expected[0, 3] -= 2.0  # RAS+ x points to the patient's right
    np.testing.assert_allclose(written.affine, expected)


def test_writer_derives_the_affine_of_a_plain_layer(tmp_path):
    layer = Image(
        np.arange(60, dtype=np.float32).reshape(3, 4, 5),
        scale=(2.0, 0.5, 1.5),
        translate=(10.0, -3.0, 4.0),
        rotate=(0.0, 0.0, 30.0),
        units=("mm", "mm", "mm"),
    )
    written = _write(layer, tmp_path / "plain.nii.gz")
    np.testing.assert_allclose(written.affine, layer_world_affine(layer))
    assert written.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_array_equal(written.get_fdata(), layer.data)


def test_2d_slice_round_trip(tmp_path):
    affine = np.array([[0.5, 0, 0, -20], [0, 0.7, 0, 30], [0, 0, 3.0, 12], [0, 0, 0, 1]])
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(30, dtype=np.int16).reshape(5, 6, 1), affine), path)
    layer = _layer(path)
    assert layer.data.shape == (5, 6) and layer.ndim == 2
    np.testing.assert_allclose(layer.scale, (0.5, 0.7))
    assert layer.axis_labels == ("x", "y")
    written = _write(layer, tmp_path / "slice_out.nii.gz")
    assert written.shape == (5, 6, 1)
    np.testing.assert_array_equal(written.affine, nib.load(path).affine)  # z row and column kept


def test_writer_refuses_other_suffixes_and_rgb(tmp_path):
    layer = Image(np.zeros((4, 5), np.float32))
    data, meta, _ = layer.as_layer_data_tuple()
    with pytest.raises(ValueError, match="NIfTI"):
        write_nifti(tmp_path / "out.png", data, meta)
    rgb = Image(np.zeros((4, 5, 3), np.uint8), rgb=True)
    data, meta, _ = rgb.as_layer_data_tuple()
    with pytest.raises(ValueError, match="RGB"):
        write_nifti(tmp_path / "out.nii.gz", data, meta)


@pytest.mark.parametrize(
    ("loader", "folder", "files", "names"),
    [
        (
            tcga_du_7294,
            "tcga_du_7294",
            ["TCGA-DU-7294_t1c.nii.gz", "TCGA-DU-7294_t2.nii.gz", "TCGA-DU-7294_flair.nii.gz"],
            ["T1c", "T2", "FLAIR"],
        ),
        (mni_ct_flair, "mni_ct_flair", ["mni_ct.nii.gz", "mni_flair.nii.gz"], ["MNI CT", "MNI FLAIR"]),
    ],
)
def test_sample_data_opens_correctly_placed(loader, folder, files, names):
    layers = [Layer.create(*layer_data) for layer_data in loader()]
    assert [layer.name for layer in layers] == names
    for layer, file in zip(layers, files, strict=True):
        source = nib.load(SAMPLE_DIR / folder / file)
        shown, matrix, _ = display_orientation(source.affine, np.asarray(source.dataobj))
        assert layer.data.shape == shown.shape and layer.axis_labels == ("S", "P", "L")
        np.testing.assert_allclose(layer_world_affine(layer), matrix)
    prepare_fusion(layers)  # all on one grid: no resampling needed
    if folder == "mni_ct_flair":
        assert layers[0].metadata[METADATA_KEY]["modality"] == "ct"


def test_manifest_reader_writer_and_samples_through_napari(tcga_crop_files, tmp_path):
    from npe2 import PluginManager

    PluginManager.instance().discover()  # a napari.Viewer does this on start; a ViewerModel does not
    viewer = ViewerModel()
    (layer,) = viewer.open(str(tcga_crop_files["t2"]), plugin="napari-isfl")
    assert layer.name == "TCGA-DU-7294_t2" and layer.data.dtype == np.int16
    saved = viewer.layers.save(str(tmp_path / "t2_saved.nii.gz"), selected=False, plugin="napari-isfl")
    assert saved == [str(tmp_path / "t2_saved.nii.gz")]
    np.testing.assert_array_equal(nib.load(saved[0]).affine, nib.load(tcga_crop_files["t2"]).affine)
    viewer.open_sample("napari-isfl", "mni_ct_flair")
    assert [lyr.name for lyr in viewer.layers] == ["TCGA-DU-7294_t2", "MNI CT", "MNI FLAIR"]


@pytest.mark.parametrize(
    ("row", "value", "message"),
    [("srow_x", [np.nan, 0, 0, 0], "NaN or Inf"), ("srow_y", [0, 0, 0, 0], "singular")],
    ids=["nan-affine", "singular-affine"],
)
def test_reader_adds_no_layer_for_a_hostile_header_and_the_viewer_stays_usable(
    make_napari_viewer, tcga_crop_files, tmp_path, row, value, message
):
    """A NIfTI whose sform holds NaN or is singular is refused before any layer exists (the message
    names the file); the viewer opens the next file and closes normally."""
    source = nib.load(tcga_crop_files["t2"])
    header = source.header.copy()
    header[row] = value
    header["sform_code"] = 1
    hostile = tmp_path / "hostile.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), None, header), hostile)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=message) as info:
        viewer.open(str(hostile), plugin="napari-isfl")
    assert "hostile.nii.gz" in str(info.value)
    assert len(viewer.layers) == 0
    (layer,) = viewer.open(str(tcga_crop_files["t2"]), plugin="napari-isfl")
    assert layer.name == "TCGA-DU-7294_t2" and len(viewer.layers) == 1


def test_dicom_folder_opens_one_axial_layer_per_series(make_napari_viewer, tmp_path):
    """A study folder with a CT and an MR series: one layer each, shown axial like NIfTI layers, named
    after the series, tagged with the series' modality, CT in HU; the NIfTI reader does not claim it."""
    pytest.importorskip("SimpleITK")
    from napari_isfl.dicom import write_dicom_series
    from napari_isfl.io import read_image

    ct = read_image(MNI_CT)
    flair = read_image(MNI_FLAIR)
    write_dicom_series(ct, tmp_path / "study" / "ct", modality="CT", series_description="head CT")
    write_dicom_series(flair, tmp_path / "study" / "mr", modality="MR", series_description="FLAIR")
    assert get_reader(str(tmp_path / "study")) is None
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "study"), plugin="napari-isfl")
    assert sorted(layer.name for layer in layers) == ["FLAIR", "head CT"]
    by_name = {layer.name: layer for layer in layers}
    for name, source in (("head CT", MNI_CT), ("FLAIR", MNI_FLAIR)):
        layer = by_name[name]
        reference = _layer(source)  # the same image through the NIfTI reader
        assert layer.axis_labels == ("S", "P", "L") and layer.data.shape == reference.data.shape
        np.testing.assert_allclose(layer_world_affine(layer), layer_world_affine(reference), atol=1e-3)
    assert by_name["head CT"].metadata[METADATA_KEY]["modality"] == "ct"
    assert by_name["head CT"].metadata[METADATA_KEY]["dicom"]["units"] == "HU"
    prepare_fusion([by_name["head CT"], by_name["FLAIR"]])  # on one grid: fusable as they are
