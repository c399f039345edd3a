//! A pure-Rust decoder for 12-bit (and 8-bit) sequential Huffman JPEG, grey images: the
//! DICOM "JPEG Extended (Process 2 & 4)" transfer syntax with BitsStored > 8, which the
//! jpeg-decoder crate refuses (ISO 10918-1 processes 2/4; SOF0/SOF1 frames, one
//! component, one or more scans is not needed: one scan, any restart interval).
//!
//! Huffman decoding, dequantisation, a separable floating-point inverse DCT and the level
//! shift, on exactly the bytes given: every table index, length and marker is checked, so
//! corrupt data gives an error, never a panic, and nothing larger than the image the frame
//! header declares (itself bounded by the DICOM Rows/Columns) is allocated.

/// Natural (row-major) position of the k-th coefficient in zig-zag order.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A decoded grey image.
#[derive(Debug)]
pub struct Decoded {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Sample precision in bits (8 or 12).
    pub precision: u8,
    /// `rows * cols` samples.
    pub samples: Vec<u16>,
}

#[derive(Clone, Default)]
struct Huffman {
    /// (code length, code) → symbol, as canonical `maxcode`/`valptr` tables.
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Huffman, String> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != symbols.len() || total > 256 {
            return Err("Huffman table counts do not match its symbols".into());
        }
        let mut h = Huffman {
            maxcode: [-1; 18],
            symbols,
            ..Huffman::default()
        };
        let mut code = 0i32;
        let mut k = 0i32;
        for len in 1..=16 {
            let n = counts[len - 1] as i32;
            h.valptr[len] = k;
            h.mincode[len] = code;
            code += n;
            k += n;
            h.maxcode[len] = if n > 0 { code - 1 } else { -1 };
            if code > (1 << len) {
                return Err("Huffman table has more codes than its lengths allow".into());
            }
            code <<= 1;
        }
        h.maxcode[17] = i32::MAX;
        Ok(h)
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    n: u32,
    /// A marker was met: no more entropy-coded bytes until it is consumed.
    marker: bool,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        if self.n == 0 {
            let byte = if self.marker {
                return Err("entropy-coded data ends early (truncated or corrupt)".into());
            } else {
                match self.data.get(self.pos) {
                    None => return Err("entropy-coded data ends early (truncated)".into()),
                    Some(0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            self.pos += 2;
                            0xFF
                        }
                        _ => {
                            self.marker = true;
                            return Err("entropy-coded data ends at a marker inside a block".into());
                        }
                    },
                    Some(&b) => {
                        self.pos += 1;
                        b
                    }
                }
            };
            self.acc = byte as u32;
            self.n = 8;
        }
        self.n -= 1;
        Ok((self.acc >> self.n) & 1)
    }

    fn bits(&mut self, count: u32) -> Result<i32, String> {
        let mut v = 0i32;
        for _ in 0..count {
            v = (v << 1) | self.bit()? as i32;
        }
        Ok(v)
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, String> {
        let mut code = self.bit()? as i32;
        let mut len = 1;
        while len <= 16 && code > h.maxcode[len] {
            code = (code << 1) | self.bit()? as i32;
            len += 1;
        }
        if len > 16 {
            return Err("invalid Huffman code".into());
        }
        let i = h.valptr[len] + code - h.mincode[len];
        h.symbols
            .get(i as usize)
            .copied()
            .ok_or_else(|| "invalid Huffman code".into())
    }

    /// `s` bits of a coefficient difference, sign-extended (F.2.2.1 EXTEND).
    fn extend(&mut self, s: u8) -> Result<i32, String> {
        if s == 0 {
            return Ok(0);
        }
        if s > 16 {
            return Err(format!("coefficient category {s} is out of range"));
        }
        let v = self.bits(s as u32)?;
        Ok(if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        })
    }

    /// Skip to the restart marker expected after an interval and consume it.
    fn restart(&mut self) -> Result<(), String> {
        self.n = 0;
        self.marker = false;
        // Fill bytes (0xFF) may precede the marker.
        while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(m)) if (0xD0..=0xD7).contains(m) => {
                self.pos += 2;
                Ok(())
            }
            _ => Err("missing restart marker".into()),
        }
    }
}

/// 8x8 inverse DCT (separable, f32), `coef` in natural order.
fn idct(coef: &[i32; 64], out: &mut [f32; 64]) {
    static COS: std::sync::OnceLock<[[f32; 8]; 8]> = std::sync::OnceLock::new();
    let c = COS.get_or_init(|| {
        let mut c = [[0f32; 8]; 8];
        for (x, row) in c.iter_mut().enumerate() {
            for (u, v) in row.iter_mut().enumerate() {
                let cu = if u == 0 {
                    std::f64::consts::FRAC_1_SQRT_2
                } else {
                    1.0
                };
                *v = (cu * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                    / 2.0) as f32;
            }
        }
        c
    });
    let mut tmp = [0f32; 64];
    for y in 0..8 {
        for u in 0..8 {
            // rows: tmp[y][u] = sum_v c[y][v] * coef[v][u]
            let mut s = 0.0;
            for v in 0..8 {
                s += c[y][v] * coef[v * 8 + u] as f32;
            }
            tmp[y * 8 + u] = s;
        }
    }
    for y in 0..8 {
        for x in 0..8 {
            let mut s = 0.0;
            for u in 0..8 {
                s += c[x][u] * tmp[y * 8 + u];
            }
            out[y * 8 + x] = s;
        }
    }
}

fn be16(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
        .ok_or_else(|| "JPEG ends inside a marker segment".into())
}

/// Decode one grey sequential Huffman JPEG (SOF0 or SOF1, 8 or 12 bits). `max_samples`
/// bounds the frame size the header may declare.
pub fn decode(data: &[u8], max_samples: usize) -> Result<Decoded, String> {
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("no JPEG start-of-image marker".into());
    }
    let mut pos = 2;
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = Default::default();
    let mut ac: [Option<Huffman>; 4] = Default::default();
    let mut frame: Option<(u8, usize, usize, usize)> = None; // precision, rows, cols, qt index
    let mut restart_interval = 0usize;
    loop {
        // Next marker (fill bytes allowed).
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(0xFF), Some(&m)) = (data.get(pos), data.get(pos + 1)) else {
            return Err(format!("expected a JPEG marker at byte {pos}"));
        };
        pos += 2;
        if m == 0xD9 {
            return Err("end of image before any scan".into());
        }
        let len = be16(data, pos)?;
        let seg = data
            .get(pos + 2..pos + len)
            .filter(|_| len >= 2)
            .ok_or_else(|| format!("marker FF{m:02X} segment runs past the data"))?;
        pos += len;
        match m {
            0xDB => {
                let mut i = 0;
                while i < seg.len() {
                    let (p, t) = (seg[i] >> 4, (seg[i] & 15) as usize);
                    i += 1;
                    let width = if p == 0 { 1 } else { 2 };
                    let bytes = seg
                        .get(i..i + 64 * width)
                        .filter(|_| t < 4)
                        .ok_or("bad quantisation table")?;
                    let mut q = [0u16; 64];
                    for (k, v) in q.iter_mut().enumerate() {
                        *v = if width == 1 {
                            bytes[k] as u16
                        } else {
                            u16::from_be_bytes([bytes[2 * k], bytes[2 * k + 1]])
                        };
                    }
                    qt[t] = Some(q);
                    i += 64 * width;
                }
            }
            0xC4 => {
                let mut i = 0;
                while i < seg.len() {
                    let (class, t) = (seg[i] >> 4, (seg[i] & 15) as usize);
                    let counts: [u8; 16] = seg
                        .get(i + 1..i + 17)
                        .and_then(|c| c.try_into().ok())
                        .ok_or("bad Huffman table")?;
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let symbols = seg.get(i + 17..i + 17 + n).ok_or("bad Huffman table")?;
                    if t >= 4 || class > 1 {
                        return Err("bad Huffman table destination".into());
                    }
                    let h = Huffman::new(&counts, symbols.to_vec())?;
                    if class == 0 {
                        dc[t] = Some(h);
                    } else {
                        ac[t] = Some(h);
                    }
                    i += 17 + n;
                }
            }
            0xC0 | 0xC1 => {
                let p = *seg.first().ok_or("short frame header")?;
                let rows = be16(seg, 1)?;
                let cols = be16(seg, 3)?;
                let nf = *seg.get(5).ok_or("short frame header")?;
                if nf != 1 {
                    return Err(format!(
                        "{nf}-component 12-bit JPEG (only grey images are decoded)"
                    ));
                }
                let tq = *seg.get(8).ok_or("short frame header")? as usize;
                if !(p == 8 || p == 12) || rows == 0 || cols == 0 || tq >= 4 {
                    return Err(format!("unsupported JPEG frame: {p} bits, {cols}x{rows}"));
                }
                if rows * cols > max_samples {
                    return Err(format!(
                        "JPEG frame of {cols}x{rows} exceeds the image it belongs to"
                    ));
                }
                frame = Some((p, rows, cols, tq));
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!(
                    "JPEG process of marker FF{m:02X} (progressive, lossless, hierarchical or \
                     arithmetic) is not the sequential Huffman process"
                ));
            }
            0xDD => restart_interval = be16(seg, 0)?,
            0xDA => {
                let (precision, rows, cols, tq) = frame.ok_or("scan before the frame header")?;
                if seg.first() != Some(&1) {
                    return Err("scan with more than one component".into());
                }
                let tables = *seg.get(2).ok_or("short scan header")?;
                let (td, ta) = ((tables >> 4) as usize, (tables & 15) as usize);
                let q = qt[tq].ok_or("missing quantisation table")?;
                let dct = dc
                    .get(td)
                    .and_then(|h| h.as_ref())
                    .ok_or("missing DC Huffman table")?;
                let act = ac
                    .get(ta)
                    .and_then(|h| h.as_ref())
                    .ok_or("missing AC Huffman table")?;
                return scan(
                    &data[pos..],
                    precision,
                    rows,
                    cols,
                    &q,
                    dct,
                    act,
                    restart_interval,
                );
            }
            _ => {} // APPn, COM, DNL and others: skipped
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scan(
    data: &[u8],
    precision: u8,
    rows: usize,
    cols: usize,
    q: &[u16; 64],
    dct: &Huffman,
    act: &Huffman,
    restart_interval: usize,
) -> Result<Decoded, String> {
    let (bw, bh) = (cols.div_ceil(8), rows.div_ceil(8));
    let mut samples = vec![0u16; rows * cols];
    let mut bits = Bits {
        data,
        pos: 0,
        acc: 0,
        n: 0,
        marker: false,
    };
    let max = (1i32 << precision) - 1;
    let shift = (1 << (precision - 1)) as f32;
    let mut pred = 0i32;
    let mut coef = [0i32; 64];
    let mut out = [0f32; 64];
    for b in 0..bw * bh {
        if restart_interval > 0 && b > 0 && b % restart_interval == 0 {
            bits.restart()?;
            pred = 0;
        }
        coef.fill(0);
        let t = bits.decode(dct)?;
        // Checked: a hostile stream (a 16-bit quantisation table, DC category 16, many
        // blocks) would overflow i32 (a panic with overflow checks, a silent wrap without).
        let out_of_range = || "DC coefficient out of range".to_string();
        pred = pred.checked_add(bits.extend(t)?).ok_or_else(out_of_range)?;
        coef[0] = pred.checked_mul(q[0] as i32).ok_or_else(out_of_range)?;
        let mut k = 1;
        while k < 64 {
            let rs = bits.decode(act)?;
            let (r, s) = ((rs >> 4) as usize, rs & 15);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            if k > 63 {
                return Err("AC coefficient run past the block".into());
            }
            coef[ZIGZAG[k]] = bits
                .extend(s)?
                .checked_mul(q[k] as i32)
                .ok_or("AC coefficient out of range")?;
            k += 1;
        }
        idct(&coef, &mut out);
        let (by, bx) = (b / bw, b % bw);
        for y in 0..8 {
            let r = by * 8 + y;
            if r >= rows {
                break;
            }
            for x in 0..8 {
                let c = bx * 8 + x;
                if c >= cols {
                    break;
                }
                let v = (out[y * 8 + x] + shift).round() as i32;
                samples[r * cols + c] = v.clamp(0, max) as u16;
            }
        }
    }
    Ok(Decoded {
        rows,
        cols,
        precision,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 12-bit 8x8 JPEG whose quantisation table is 16-bit (65535 everywhere) and whose
    /// one block has DC category 16 (difference 65535): `pred * q` is 2^32, past i32.
    /// Refused with the reason (it panicked with overflow checks, wrapped silently without).
    #[test]
    fn dc_coefficient_overflow_is_refused() {
        let mut jpeg = vec![0xFF, 0xD8];
        // DQT: 16-bit table 0, all 65535.
        jpeg.extend([0xFF, 0xDB, 0x00, 131, 0x10]);
        jpeg.extend(std::iter::repeat_n([0xFF, 0xFF], 64).flatten());
        // SOF1: 12 bits, 8x8, one component, table 0.
        jpeg.extend([0xFF, 0xC1, 0x00, 11, 12, 0, 8, 0, 8, 1, 1, 0x11, 0]);
        // DHT: DC table 0 with one 1-bit code for category 16; AC table 0: one code, EOB.
        let mut counts = [0u8; 16];
        counts[0] = 1;
        for (class, symbol) in [(0x00u8, 16u8), (0x10, 0x00)] {
            jpeg.extend([0xFF, 0xC4, 0x00, 20, class]);
            jpeg.extend(counts);
            jpeg.push(symbol);
        }
        // SOS, then the bits 0 (DC code), sixteen 1s (65535), 0 (EOB), 1s to pad; the
        // 0xFF byte is stuffed.
        jpeg.extend([0xFF, 0xDA, 0x00, 8, 1, 1, 0x00, 0, 63, 0]);
        jpeg.extend([0x7F, 0xFF, 0x00, 0xBF, 0xFF, 0xD9]);
        let err = decode(&jpeg, 64).expect_err("overflowing coefficient");
        assert!(err.contains("out of range"), "{err}");
    }
}
