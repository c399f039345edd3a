#!/usr/bin/env python3
"""Draw a propagated segmentation: the slices of a SEG written by `medfm segment --propagate`
side by side, each with its source slice, the mask in red and its area, and the volume.

    propagation_picture.py SEG.dcm SERIES_DIR OUT.png [--title TEXT]

Independent of medfm: highdicom reads the SEG (which source instance each frame covers),
pydicom the source slices (shown min..max of the 0.5 / 99.5 percentiles). The README's
picture docs/propagated_brain.png is

    medfm segment tests/data/series/brain11/brain_010.dcm --box 45,60,215,240 \
        --propagate --extent 2 --cpu --out prop.dcm
    propagation_picture.py prop.dcm tests/data/series/brain11 docs/propagated_brain.png \
        --title "medfm segment brain_010.dcm --box 45,60,215,240 --propagate --extent 2: "
"""
import argparse
import pathlib

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seg")
    ap.add_argument("series")
    ap.add_argument("out")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    seg = hd.seg.segread(a.seg)
    by_uid = {}
    for p in sorted(pathlib.Path(a.series).iterdir()):
        try:
            d = pydicom.dcmread(p)
        except Exception:
            continue
        by_uid[d.SOPInstanceUID] = d
    sources = [uid for _, _, uid in seg.get_source_image_uids()]
    slices = []
    for uid in sources:
        d = by_uid[uid]
        mask = np.asarray(seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid], segment_numbers=[1], assert_missing_frames_are_empty=True))[0, :, :, 0]
        pos = float(np.dot(np.asarray(d.ImagePositionPatient, float),
                           np.cross(*np.asarray(d.ImageOrientationPatient, float).reshape(2, 3))))
        slices.append((pos, d, mask))
    slices.sort(key=lambda s: s[0])
    spacing = [float(v) for v in slices[0][1].PixelSpacing]
    step = abs(slices[1][0] - slices[0][0]) if len(slices) > 1 else float(slices[0][1].SliceThickness)
    voxels = sum(int(m.sum()) for _, _, m in slices)
    ml = voxels * spacing[0] * spacing[1] * step / 1000.0
    tiles = []
    for k, (_, d, mask) in enumerate(slices):
        img = d.pixel_array.astype(np.float32)
        lo, hi = np.percentile(img, [0.5, 99.5])
        g = np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        rgb = np.stack([g, g, g], -1).astype(np.float32)
        red = np.array([230, 60, 60], np.float32)
        m = mask.astype(bool)
        rgb[m] = 0.55 * rgb[m] + 0.45 * red
        tile = Image.fromarray(rgb.astype(np.uint8))
        ImageDraw.Draw(tile).text((6, 4), f"slice {k + 1}: {int(mask.sum())} px", fill=(255, 255, 255))
        tiles.append(tile)
    w, h = tiles[0].size
    head = 22
    out = Image.new("RGB", (w * len(tiles), h + head), (0, 0, 0))
    for k, t in enumerate(tiles):
        out.paste(t, (k * w, head))
    ImageDraw.Draw(out).text(
        (6, 5), f"{a.title}{len(slices)} slices, {voxels} voxels, {ml:.1f} mL", fill=(255, 255, 255))
    out.quantize(colors=128).save(a.out, optimize=True)  # a palette keeps the file small
    print(f"{a.out}: {len(slices)} slices, {voxels} voxels, {ml:.2f} mL")


if __name__ == "__main__":
    main()
