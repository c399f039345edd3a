#!/usr/bin/env python3
"""Write the hostile-input fixtures of issue 19 (tests/data/bad, tests/data/window).

- bad/frames_2e28.dcm: MR_small reduced to one 1x1 pixel (2 bytes of pixel data) that
  claims NumberOfFrames 268435456 (2^28): it must be refused when read, not turned into
  2^28 frames.
- bad/frames_encapsulated.dcm: the RLE MR_small claiming 1000 frames with one fragment.
- unsupported/MR_small_mpeg2.dcm: the RLE MR_small relabelled MPEG2 (a video transfer
  syntax, no decoder in medfm): refused as unsupported, not as bad input.
- window/ct_width_0.dcm, window/ct_width_negative.dcm: CT_small with WindowWidth 0 and
  -400: the segmentation recipe falls back to the default CT window with a warning.
Needs pydicom (scripts/test.sh's checker venv has it).
"""
import pydicom

d = pydicom.dcmread("tests/data/MR_small.dcm")
d.Rows = 1
d.Columns = 1
d.NumberOfFrames = 268435456
d.PixelData = b"\x01\x00"
d.save_as("tests/data/bad/frames_2e28.dcm", enforce_file_format=True)

d = pydicom.dcmread("tests/data/decode/MR_small_RLE.dcm")
d.NumberOfFrames = 1000
d.save_as("tests/data/bad/frames_encapsulated.dcm", enforce_file_format=True)

d = pydicom.dcmread("tests/data/decode/MR_small_RLE.dcm")
d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
d.save_as("tests/data/unsupported/MR_small_mpeg2.dcm", enforce_file_format=True)

for name, width in [("ct_width_0", "0"), ("ct_width_negative", "-400")]:
    d = pydicom.dcmread("tests/data/CT_small.dcm")
    d.WindowCenter = "40"
    d.WindowWidth = width
    d.save_as(f"tests/data/window/{name}.dcm", enforce_file_format=True)
