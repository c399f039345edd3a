#!/usr/bin/env python3
"""Check a NIfTI written by `medfm convert` against the DICOM series it came from.

    check_nifti.py OUT.nii[.gz] DICOM_FILE...

Independently of medfm: pydicom reads the slices, sorts them by ImagePositionPatient
along the slice normal, applies the modality LUT and builds the voxel -> RAS affine;
nibabel reads our file. Values must be identical and the affine (sform and qform) equal
within 1e-4. Exits non-zero on any difference.
"""
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


def main():
    out, files = sys.argv[1], sys.argv[2:]
    ds = [pydicom.dcmread(f) for f in files]
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ds.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    vol = np.stack([apply_modality_lut(d.pixel_array, d).astype(np.float32) for d in ds], axis=-1)  # rows, cols, k
    dr, dc = (float(x) for x in ds[0].PixelSpacing)
    if len(ds) > 1:
        p = [np.dot(np.array(d.ImagePositionPatient, dtype=float), normal) for d in ds]
        dz = float(np.median(np.diff(p)))
    else:
        dz = float(ds[0].get("SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = normal * dz
    lps[:3, 3] = np.array(ds[0].ImagePositionPatient, dtype=float)
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
