#!/usr/bin/env python3
"""Check a NIfTI written by `medfm convert` against the DICOM series it came from.

    check_nifti.py OUT.nii[.gz] DICOM_FILE...

Independently of medfm: pydicom reads the slices (every frame of a multi-frame file, its
geometry and rescale from the per-frame, then shared, functional groups), sorts them by
ImagePositionPatient along the slice normal, applies the modality LUT and builds the
voxel -> RAS affine;
nibabel reads our file. Values must be identical and the affine (sform and qform) equal
within 1e-4. Exits non-zero on any difference.
"""
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


def frames(d):
    """Every frame of a data set as a slice: pixels after the modality LUT, and geometry."""
    n = int(d.get("NumberOfFrames", 1) or 1)
    arr = d.pixel_array if n > 1 else d.pixel_array[None]
    out = []
    for i in range(n):
        def attr(group, key):
            if key in d:
                return d[key].value
            for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
                if seq in d:
                    fg = d[seq][i] if seq.startswith("Per") else d[seq][0]
                    if group in fg and key in fg[group][0]:
                        return fg[group][0][key].value
            return None
        slope = attr("PixelValueTransformationSequence", "RescaleSlope")
        intercept = attr("PixelValueTransformationSequence", "RescaleIntercept")
        if "ModalityLUTSequence" in d:
            a = apply_modality_lut(arr[i], d)
        else:
            a = arr[i].astype(np.float64) * float(1 if slope is None else slope) + float(intercept or 0)
        out.append({
            "a": a.astype(np.float32),
            "iop": np.array(attr("PlaneOrientationSequence", "ImageOrientationPatient"), dtype=float),
            "ipp": np.array(attr("PlanePositionSequence", "ImagePositionPatient"), dtype=float),
            "ps": [float(x) for x in attr("PixelMeasuresSequence", "PixelSpacing")],
            "st": attr("PixelMeasuresSequence", "SliceThickness"),
        })
    return out


def main():
    out, files = sys.argv[1], sys.argv[2:]
    ds = [f for path in files for f in frames(pydicom.dcmread(path))]
    iop = ds[0]["iop"]
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ds.sort(key=lambda d: float(np.dot(d["ipp"], normal)))
    vol = np.stack([d["a"] for d in ds], axis=-1)  # rows, cols, k
    dr, dc = ds[0]["ps"]
    if len(ds) > 1:
        p = [np.dot(d["ipp"], normal) for d in ds]
        dz = float(np.median(np.diff(p)))
    else:
        dz = float(ds[0]["st"] or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = normal * dz
    lps[:3, 3] = ds[0]["ipp"]
    ras = np.diag([-1, -1, 1, 1]) @ lps

    img = nib.load(out)
    data = np.asarray(img.dataobj)  # i (cols), j (rows), k
    expected = vol.transpose(1, 0, 2)
    assert data.shape == expected.shape, (data.shape, expected.shape)
    diff = float(np.abs(data - expected).max())
    assert diff == 0.0, f"values differ by {diff}"
    sform, qform = img.get_sform(), img.get_qform()
    for name, a in (("sform", sform), ("qform", qform)):
        err = float(np.abs(a - ras).max())
        assert err < 1e-4, f"{name} differs from the DICOM geometry by {err}:\n{a}\nvs\n{ras}"
    print(f"nibabel {nib.__version__}: {out} {data.shape} values identical, sform/qform match the DICOM geometry")


if __name__ == "__main__":
    main()
