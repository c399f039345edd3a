"""The `medfm` Python package against the `medfm` CLI of the same tree: the same masks,
propagations, vectors and SEG files, and every bad input a Python exception of its kind
with the process alive (issue 36, item 1)."""

import concurrent.futures
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from PIL import Image

import medfm

# (file, box) of the single-image comparisons: CT, MR, colour, compressed, multi-frame.
SINGLE = [
    ("CT_small.dcm", (30, 30, 100, 100)),
    ("MR_small.dcm", (10, 12, 50, 52)),
    ("examples_ybr_color.dcm", (60, 40, 260, 200)),
    ("JPEG-LL.dcm", (40, 300, 220, 700)),
    ("decode/MR_small_RLE.dcm", (10, 12, 50, 52)),
]

# The CT of tests/data/ct-lung1: its tumour's slice and a box around the expert label.
LUNG = "ct-lung1/series"
LUNG_START = "IM0009.dcm"
LUNG_BOX = (200, 340, 236, 375)


def png_mask(path):
    """A mask PNG of the CLI (0/255) as 0/1."""
    return (np.asarray(Image.open(path)) // 255).astype(np.uint8)


def seg_masks(path, series):
    """A SEG file's masks on `series`: (segments, frames, rows, cols), each frame placed
    by the instance (and frame) it references."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    at = {f: k for k, f in enumerate(series.frames)}
    out = np.zeros((len(ds.SegmentSequence), len(series), ds.Rows, ds.Columns), np.uint8)
    for i, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(getattr(source, "ReferencedFrameNumber", 1)) - 1
        slice_ = at[(source.ReferencedSOPInstanceUID, frame)]
        segment = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        out[segment - 1, slice_] = pixels[i]
    return out


def box_arg(box):
    return ",".join(map(str, box))


@pytest.mark.parametrize("name,box", SINGLE)
def test_segment_equals_the_cli(model, cli, data, tmp_path, name, box):
    series = medfm.read_series(data / name)
    mask = model.segment(series, frame=0, box=box)
    assert mask.dtype == np.uint8 and mask.shape == (series.meta["rows"], series.meta["cols"])
    out = tmp_path / "cli.png"
    cli("segment", data / name, "--box", box_arg(box), "--precision", "int8", "--cpu",
        "--out", out)
    want = png_mask(out)
    assert 0 < want.sum() < want.size, "a real mask, not an empty or full one"
    np.testing.assert_array_equal(mask, want)


def test_segment_multiframe_slices_are_the_cli_frames(model, cli, data, tmp_path):
    """`frame` is the slice in series order; series.frames says which frame of which file
    it is, and that frame's CLI mask is the same."""
    series = medfm.read_series(data / "emri_small.dcm")
    assert len(series) > 1
    box = (8, 8, 56, 56)
    for k in (0, len(series) - 1):
        _, frame = series.frames[k]
        out = tmp_path / f"f{k}.png"
        cli("segment", data / "emri_small.dcm", "--frame", frame, "--box", box_arg(box),
            "--precision", "int8", "--cpu", "--out", out)
        np.testing.assert_array_equal(model.segment(series, frame=k, box=box), png_mask(out))


def test_points_and_multimask_equal_the_cli(model, cli, data, tmp_path):
    series = medfm.read_series(data / "CT_small.dcm")
    mask = model.segment(series, points=[(64, 64), (20, 20, 0)], multimask=True)
    out = tmp_path / "p.png"
    cli("segment", data / "CT_small.dcm", "--point", "64,64", "--point", "20,20,0",
        "--multimask", "--precision", "int8", "--cpu", "--out", out)
    np.testing.assert_array_equal(mask, png_mask(out))


def test_prompts_take_any_sequence_of_numbers(model, data):
    series = medfm.read_series(data / "CT_small.dcm")
    box = (30, 30, 100, 100)
    want = model.segment(series, box=box)
    np.testing.assert_array_equal(model.segment(series, box=list(box)), want)
    np.testing.assert_array_equal(model.segment(series, box=np.array(box, np.int64)), want)
    both = model.segment(series, box=box, points=np.array([[64, 64, 1]]))
    np.testing.assert_array_equal(both, model.segment(series, box=box, points=[(64, 64)]))


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_numpy_ct_image_with_its_window_equals_the_file(model, cli, data, tmp_path, dtype):
    """A 2D array of HU with the file's window is segmented as the file is."""
    name, box = SINGLE[0]
    series = medfm.read_series(data / name)
    hu = np.ascontiguousarray(series.volume[0].astype(dtype))
    ds = pydicom.dcmread(data / name)
    # The file's window, else the recipe's default CT window (CT_small has none).
    window = (40.0, 400.0)
    if "WindowCenter" in ds:
        window = (float(np.ravel(ds.WindowCenter)[0]), float(np.ravel(ds.WindowWidth)[0]))
    out = tmp_path / "cli.png"
    cli("segment", data / name, "--box", box_arg(box), "--precision", "int8", "--cpu",
        "--out", out)
    np.testing.assert_array_equal(model.segment(hu, box=box, window=window), png_mask(out))


def test_a_numpy_mr_image_equals_the_file(model, cli, data, tmp_path):
    """Without a window, a grey array is clipped by its percentiles, as an MR file."""
    name, box = SINGLE[1]
    series = medfm.read_series(data / name)
    out = tmp_path / "cli.png"
    cli("segment", data / name, "--box", box_arg(box), "--precision", "int8", "--cpu",
        "--out", out)
    np.testing.assert_array_equal(model.segment(series.volume[0], box=box), png_mask(out))


def test_series_reads_in_series_order(data):
    series = medfm.read_series(data / LUNG)
    assert len(series) == 48
    assert series.volume.shape == (48, 512, 512) and series.volume.dtype == np.float32
    assert not series.volume.flags.writeable
    assert len(set(series.uids)) == 48
    # The order is along the slice normal (the file names are shuffled): the positions
    # step by the spacing.
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
         for p in series.paths]
    steps = np.diff(z)
    assert np.all(np.sign(steps) == np.sign(steps[0]))
    assert series.spacing == pytest.approx((abs(steps[0]), 0.5703, 0.5703), abs=1e-3)
    assert series.meta["modality"] == "CT" and series.meta["rows"] == 512
    # The volume is the decoded HU of each file, slice by slice.
    first = pydicom.dcmread(series.paths[0])
    hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(series.volume[0], hu.astype(np.float32))


@pytest.fixture(scope="module")
def lung_propagation(model, data):
    series = medfm.read_series(data / LUNG)
    start = [pathlib.Path(p).name for p in series.paths].index(LUNG_START)
    return series, start, model.propagate(series, frame=start, box=LUNG_BOX)


def test_propagate_equals_the_cli(lung_propagation, cli, data, tmp_path):
    series, start, result = lung_propagation
    assert result.masks.shape == (48, 512, 512) and result.masks.dtype == np.uint8
    assert result.start == start and start in result.slices and len(result.slices) > 1
    assert all(s in ("series-end", "extent", "empty-mask", "low-iou") for s in result.stopped)
    out = tmp_path / "cli.dcm"
    cli("segment", data / LUNG / LUNG_START, "--box", box_arg(LUNG_BOX), "--propagate",
        "--precision", "int8", "--cpu", "--out", out)
    np.testing.assert_array_equal(result.masks, seg_masks(out, series)[0])
    # The mask of the start slice is the single-image one only where the recipes agree:
    # the propagation clips the series once; its start slice is still segmented.
    assert result.masks[start].sum() > 0


def test_propagate_with_an_extent_equals_the_cli(model, cli, data, tmp_path):
    series = medfm.read_series(data / "series/brain11")
    box = (60, 60, 200, 200)
    result = model.propagate(series, frame=5, box=box, extent=2)
    assert result.slices == [3, 4, 5, 6, 7] and result.stopped == ("extent", "extent")
    start = series.paths[5]
    out = tmp_path / "cli.dcm"
    cli("segment", start, "--box", box_arg(box), "--propagate", "--extent", 2,
        "--precision", "int8", "--cpu", "--out", out)
    np.testing.assert_array_equal(result.masks, seg_masks(out, series)[0])


def test_embed_equals_the_cli(model_fp32, cli, data, tmp_path):
    series = medfm.read_series(data / "series/brain11")
    vectors = model_fp32.embed(series)
    assert vectors.shape == (len(series), 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    out, meta = tmp_path / "v.npy", tmp_path / "v.jsonl"
    cli("embed", data / "series/brain11", "--out", out, "--meta", meta, "--cpu")
    want = np.load(out)
    lines = [json.loads(line) for line in meta.read_text().splitlines()]
    by_uid = {(m["instance_uid"], m["frame"]): want[i] for i, m in enumerate(lines)}
    assert len(by_uid) == len(series)
    for k, key in enumerate(series.frames):
        np.testing.assert_allclose(vectors[k], by_uid[key], atol=1e-6, rtol=0)


def test_write_seg_passes_dciodvfy_and_highdicom_reads_it(lung_propagation, tmp_path):
    import highdicom as hd

    series, _, result = lung_propagation
    path = tmp_path / "tumour.dcm"
    medfm.write_seg(series, result, path, labels=["Tumour"])
    check = shutil.which("dciodvfy")
    assert check, "dciodvfy (dicom3tools) must be installed (scripts/test.sh does)"
    report = subprocess.run([check, str(path)], capture_output=True, text=True).stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report
    seg = hd.seg.segread(path)
    assert seg.get_segment_description(1).segment_label == "Tumour"
    np.testing.assert_array_equal(seg_masks(path, series)[0], result.masks)
    # The same masks as an array: the same frames (every slice with a voxel).
    again = tmp_path / "array.dcm"
    medfm.write_seg(series, result.masks, again, labels=["Tumour"])
    np.testing.assert_array_equal(seg_masks(again, series)[0], result.masks)
    assert hd.seg.segread(again).number_of_frames == int((result.masks.sum((1, 2)) > 0).sum())
    # A propagation belongs to its series object; labels are one per segment.
    with pytest.raises(medfm.BadInput, match="another Series"):
        medfm.write_seg(medfm.read_series(series.paths[0]), result, tmp_path / "x.dcm")
    with pytest.raises(medfm.BadInput, match="2 labels for 1 segment"):
        medfm.write_seg(series, result.masks, tmp_path / "x.dcm", labels=["A", "B"])
    with pytest.raises(medfm.BadInput, match="a color is"):
        medfm.write_seg(series, result.masks, tmp_path / "x.dcm", colors=[(0, 0, 300)])
    assert not (tmp_path / "x.dcm").exists()


def test_write_seg_of_several_segments(model, data, tmp_path):
    series = medfm.read_series(data / "series/brain11")
    masks = np.zeros((2, len(series), 256, 256), np.uint8)
    masks[0, 2:5, 100:140, 100:140] = 1
    masks[1, 6, 10:20, 30:60] = 1
    path = tmp_path / "two.dcm"
    medfm.write_seg(series, masks.astype(bool), path, labels=["A", "B"],
                    colors=[(255, 0, 0), (0, 0, 255)])
    np.testing.assert_array_equal(seg_masks(path, series), masks)


def test_one_model_from_several_threads(model, data):
    series = medfm.read_series(data / "CT_small.dcm")
    boxes = [(30, 30, 100, 100), (20, 40, 90, 110), (40, 20, 110, 90), (10, 10, 120, 120)]
    alone = [model.segment(series, box=b) for b in boxes]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda b: model.segment(series, box=b), boxes))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


# Every malformed fixture of tests/data/bad with the reason its Rust test expects
# (tests/cli_errors.rs); badVR.dcm is read (a VR it does not know is read as UN).
BAD = {
    "MR_truncated.dcm": "(7FE0,0010) declares 8192 bytes but only 8130 follow",
    "SC_rgb_jpeg.dcm": "(0008,0008) declares 1230128452 bytes",
    "UN_sequence.dcm": "(0008,1115) declares 3758161918 bytes",
    "badVR.dcm": None,
    "frames_2e28.dcm": "need 536870912 bytes, but PixelData holds 2",
    "frames_encapsulated.dcm": "1000 frames, but the encapsulated PixelData holds 1 fragment",
    "meta_missing_tsyntax.dcm": "Could not parse meta group data set",
    "no_meta.dcm": "no `DICM` magic",
    "rtplan_truncated.dcm": "(300A,012C) declares 50 bytes but only 29 follow",
}


def test_crafted_files_are_bad_input(model, data):
    assert sorted(p.name for p in (data / "bad").iterdir()) == sorted(BAD)
    for name, reason in BAD.items():
        try:
            series = medfm.read_series(data / "bad" / name)
            rows, cols = series.meta["rows"], series.meta["cols"]
            mask = model.segment(series, box=(0, 0, cols - 1, rows - 1))
        except medfm.BadInput as e:
            assert reason, f"{name}: {e}"
            assert reason in str(e), f"{name}: {e}"
            assert e.kind == "bad-input" and isinstance(e, ValueError)
        else:
            assert reason is None, f"{name} was read"
            assert mask.shape == (rows, cols)


def test_unsupported_pixel_data_is_its_own_kind(model, data):
    """A video transfer syntax (no decoder in medfm): ``medfm.Unsupported``, which is also
    a ``BadInput`` and a ``ValueError``, saying what to do; the model still works."""
    series = medfm.read_series(data / "unsupported" / "MR_small_mpeg2.dcm")
    with pytest.raises(medfm.Unsupported, match="convert the file") as raised:
        model.segment(series, box=(10, 10, 50, 50))
    e = raised.value
    assert e.kind == "unsupported" and isinstance(e, medfm.BadInput) and isinstance(e, ValueError)
    assert "1.2.840.10008.1.2.4.100" in str(e)
    good = medfm.read_series(data / "MR_small.dcm")
    assert model.segment(good, box=(10, 10, 50, 50)).shape == (64, 64)


def test_bad_arrays_and_prompts_are_bad_input(model, data):
    box = (4, 4, 40, 40)
    cases = [
        (np.zeros((64, 64), np.float64), "dtype float64"),
        (np.zeros((64, 64), np.int32), "dtype int32"),
        (np.zeros((2, 64, 64), np.float32), "shape [2, 64, 64]"),
        (np.zeros((64, 64, 3), np.int16), "shape [64, 64, 3]"),
        (np.zeros((64, 128), np.int16)[:, ::2], "not C-contiguous"),
        # Fortran order is contiguous, but not in rows: refused, never read transposed.
        (np.asfortranarray(np.zeros((64, 64), np.float32)), "not C-contiguous"),
        (np.zeros((64, 64), np.uint16).T, "not C-contiguous"),
        ([[0, 1], [2, 3]], "a list"),
    ]
    for image, says in cases:
        with pytest.raises(medfm.BadInput, match=says.replace("[", r"\[").replace("]", r"\]")):
            model.segment(image, box=box)
    series = medfm.read_series(data / "MR_small.dcm")
    for kwargs, says in [
        (dict(box=(0, 0, 1000, 1000)), "outside"),
        (dict(box=(40, 40, 10, 10)), "empty"),
        (dict(box=(0, 0, float("nan"), 10)), "NaN"),
        (dict(), "give a box or at least one point"),
        (dict(points=[(1, 2, 3, 4)]), "a point is"),
        (dict(box=(1, 2, 3)), "box is"),
        (dict(box="1,2,3,4"), "box must be a sequence of numbers"),
        (dict(points=5), "points must be a sequence"),
        (dict(points=[(1, 2, 7)]), "label"),
        (dict(box=box, frame=1), "frame 1 is outside"),
        (dict(box=box, frame=-1), "frame -1 is negative"),
        (dict(box=box, window=(40, 400)), "numpy images"),
    ]:
        with pytest.raises(medfm.BadInput, match=says):
            model.segment(series, **kwargs)
    with pytest.raises(medfm.BadInput, match="window is used by the CT recipe only"):
        model.segment(np.zeros((8, 8), np.float32), box=(1, 1, 5, 5), window=(0, 1),
                      modality="MR")
    with pytest.raises(medfm.BadInput, match="min-iou"):
        model.propagate(series, frame=0, box=box, min_iou=2.0)
    with pytest.raises(medfm.BadInput, match="outside the series"):
        model.propagate(series, frame=5, box=box)
    with pytest.raises(medfm.BadInput, match="extent -2 is negative"):
        model.propagate(series, frame=0, box=box, extent=-2)
    # Masks that do not fit, or are not 0/1.
    with pytest.raises(medfm.BadInput, match="do not fit"):
        medfm.write_seg(series, np.ones((1, 8, 8), np.uint8), "/tmp/never.dcm")
    with pytest.raises(medfm.BadInput, match="must be 0 or 1"):
        medfm.write_seg(series, np.full((1, 64, 64), 255, np.uint8), "/tmp/never.dcm")
    with pytest.raises(medfm.BadInput, match="uint8"):
        medfm.write_seg(series, np.ones((1, 64, 64), np.float32), "/tmp/never.dcm")
    # And the model still works.
    assert model.segment(series, box=box).sum() > 0


def test_paths_weights_and_devices_raise_their_kind(model, data, tmp_path):
    """(`model` first: the process's run configuration is the CPU's, whatever the order.)"""
    with pytest.raises(medfm.IoError) as e:
        medfm.read_series(tmp_path / "missing")
    assert isinstance(e.value, OSError) and e.value.kind == "io"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(medfm.BadInput, match="no DICOM image"):
        medfm.read_series(empty)
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(data / "CT_small.dcm", two)
    shutil.copy(data / "MR_small.dcm", two)
    with pytest.raises(medfm.BadInput, match="holds 2 series"):
        medfm.read_series(two)
    ct = pydicom.dcmread(data / "CT_small.dcm", stop_before_pixels=True)
    assert len(medfm.read_series(two, series_uid=ct.SeriesInstanceUID)) == 1
    with pytest.raises(medfm.BadInput, match="precision"):
        medfm.Model(precision="fp16", device="cpu")
    with pytest.raises(medfm.BadInput, match="device"):
        medfm.Model(device="tpu")
    fake = tmp_path / "fake.bpk"
    fake.write_bytes(b"not weights")
    with pytest.raises(medfm.WeightsError):
        medfm.Model(weights=fake, device="cpu")
    # One run configuration per process: the tests' models run on the CPU.
    with pytest.raises(medfm.DeviceError, match="one run configuration per process"):
        medfm.Model(device="cpu", threads=1)


def test_model_names_its_weights(model):
    assert model.precision == "int8" and model.device == "cpu (flex)"
    assert len(model.weights_sha256) == 64 and pathlib.Path(model.weights).name == "lite_medsam_int8.bpk"
    assert medfm.__version__
