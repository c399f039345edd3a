//! Segment colours: the default palette and sRGB as DICOM's CIE L*a*b* values.

/// Default segment colours (sRGB), in segment order, repeating: the browser's segment
/// colours (www/app.js) and `medfm segment --segments` without a `color`.
pub const PALETTE: [[u8; 3]; 6] = [
    [230, 60, 60],
    [60, 200, 90],
    [70, 130, 240],
    [240, 200, 40],
    [200, 80, 220],
    [40, 210, 210],
];

/// An sRGB colour as DICOM's RecommendedDisplayCIELabValue: CIE L*a*b* relative to the
/// D65 white (as highdicom, dcmqi and dcmjs convert it), L* 0..100 scaled to 0..65535,
/// a* and b* -128..127 shifted and scaled to 0..65535, rounded.
pub fn cielab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = rgb.map(lin);
    // sRGB -> XYZ (D65), divided by the D65 white.
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f64| {
        const D: f64 = 6.0 / 29.0;
        if t > D * D * D {
            t.cbrt()
        } else {
            t / (3.0 * D * D) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = (116.0 * fy - 16.0).clamp(0.0, 100.0);
    let a = (500.0 * (fx - fy)).clamp(-128.0, 127.0);
    let bb = (200.0 * (fy - fz)).clamp(-128.0, 127.0);
    let scale = |v: f64, lo: f64, span: f64| ((v - lo) * 65535.0 / span).round() as u16;
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 255.0),
        scale(bb, -128.0, 255.0),
    ]
}
