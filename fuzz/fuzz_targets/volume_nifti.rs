//! Fuzz target: volume assembly and NIfTI writing over arbitrary inputs. The input is up to
//! eight DICOM files, each preceded by its length (u32, little endian); the files that read
//! are assembled into a volume (or refused with an error) and a volume is written as
//! NIfTI-1 (or refused). Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom as dicom;

fuzz_target!(|bytes: &[u8]| {
    let mut images = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 && images.len() < 8 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        let n = n.min(rest.len());
        if let Ok(image) = dicom::read(&rest[..n]) {
            // Bounded work per input: small images only.
            if u64::from(image.meta.rows) * u64::from(image.meta.cols) * u64::from(image.meta.frames) <= 1 << 20 {
                images.push(image);
            }
        }
        rest = &rest[n..];
    }
    if let Ok(volume) = dicom::volume::assemble(&images) {
        if let Ok(nii) = volume.to_nifti() {
            assert!(nii.len() >= 352);
        }
    }
});
