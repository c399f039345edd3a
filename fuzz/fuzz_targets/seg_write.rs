//! Fuzz target: a DICOM SEG written over arbitrary input. The first byte seeds the mask
//! pattern, the rest is a DICOM file; when it reads, a SEG of its first frame is written
//! (or refused with an error) and a SEG that is written must read back with the source's
//! size. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom as dicom;

fuzz_target!(|bytes: &[u8]| {
    let Some((&seed, file)) = bytes.split_first() else {
        return;
    };
    let Ok(image) = dicom::read(file) else {
        return;
    };
    let n = (image.meta.rows as usize).saturating_mul(image.meta.cols as usize);
    if n == 0 || n > 1 << 22 {
        return;
    }
    let mask: Vec<u8> = (0..n)
        .map(|i| u8::from((i as u8).wrapping_mul(seed | 1) & 0x80 != 0))
        .collect();
    if let Ok(seg) = dicom::seg::write_seg(&image, 0, &mask, &Default::default()) {
        let back = dicom::read(&seg).expect("a SEG we wrote reads back");
        assert_eq!((back.meta.rows, back.meta.cols), (image.meta.rows, image.meta.cols));
    }
});
