//! Unit tests of `lut`.
use super::*;

#[test]
fn linear_window_follows_the_standard_formula() {
    // PS3.3 C.11.2.1.2.1 with center 40, width 400: -160.5 -> 0, 239.5 -> 1.
    let w = Window::linear(40.0, 400.0);
    assert_eq!(w.apply(-161.0), 0.0);
    assert_eq!(w.apply(240.0), 1.0);
    assert!((w.apply(39.5) - 0.5).abs() < 1e-12);
    assert!(Window::linear(40.0, 0.5).check().is_err());
}

#[test]
fn lut_clamps_below_first_and_past_the_end() {
    let lut = Lut::from_parts(
        &[3, -2, 16],
        &[1, 0, 2, 0, 3, 0],
        Tag(0x0028, 0x3006),
        "LUTData",
    )
    .unwrap();
    assert_eq!(lut.get(-5.0), 1.0);
    assert_eq!(lut.get(-1.0), 2.0);
    assert_eq!(lut.get(9.0), 3.0);
    assert!(Lut::from_parts(&[4, 0, 16], &[1, 0], Tag(0x0028, 0x3006), "LUTData").is_err());
}

#[test]
fn render_clamps_colour_and_inverts_monochrome1_only() {
    use crate::Frame;
    let rgb = Frame {
        rows: 1,
        cols: 2,
        channels: 3,
        values: vec![-4.0, 0.0, 12.7, 255.0, 300.0, 128.0],
    };
    let r = render(&rgb, None, "MONOCHROME1");
    assert_eq!((r.channels, r.inverted), (3, false));
    assert_eq!(r.pixels, vec![0, 0, 12, 255, 255, 128]);
    let grey = Frame {
        rows: 1,
        cols: 2,
        channels: 1,
        values: vec![0.0, 100.0],
    };
    let m2 = render(&grey, None, "MONOCHROME2");
    let m1 = render(&grey, None, "MONOCHROME1");
    assert_eq!((m2.channels, m2.inverted, m1.inverted), (1, false, true));
    assert_eq!(m2.pixels, vec![0, 255]);
    assert_eq!(m1.pixels, vec![255, 0]);
}

#[test]
fn segmented_palette_expands_discrete_linear_and_indirect_segments() {
    // discrete [0, 10], linear to 40 over 3, indirect repeating the first segment.
    let words: [u16; 11] = [0, 2, 0, 10, 1, 3, 40, 2, 1, 0, 0];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let v = expand_segmented(&bytes, 16, 7).unwrap();
    assert_eq!(v, vec![0, 10, 20, 30, 40, 0, 10]);
    assert!(expand_segmented(&bytes[..10], 16, 7).is_err());
}
