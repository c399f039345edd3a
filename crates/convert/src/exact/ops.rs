//! The fixed-order f32 kernels of [`super`]: every output value is one sequence of IEEE-754
//! operations that depends on the operands alone.
//!
//! - Products: `out[i][j] = ((0 + a[i][0] b[0][j]) + a[i][1] b[1][j] + ...) + bias[j]`,
//!   each step a rounded multiply then a rounded add (never a fused multiply-add: Rust
//!   does not contract `a * b + c`, and the vector code below spells out the two
//!   operations), the sum always in the order of `k`. Vector instructions hold
//!   *different outputs* in their lanes, never parts of one sum, so the lane count (1 to
//!   16 f32) changes the speed, not a bit of the result; threads take whole rows.
//! - Sums over a row (norms, softmax) run left to right in scalar code.
//! - `exp`, `erf`, `sin`, `cos` come from the `libm` crate: the same Rust source compiled
//!   for every target, never the platform's C library (whose results differ between
//!   glibc versions and between its FMA and non-FMA variants); `sqrt` and division are
//!   correctly rounded by IEEE-754.
//!
//! Which vector instructions run is chosen at run time (`macerator`), and
//! [`force_scalar`] makes it the scalar fallback, which the tests compare against.

use std::sync::atomic::{AtomicBool, Ordering};

use macerator::{Arch, Scalar, Simd, Vector, vload_unaligned, vstore_unaligned};
use medfm::model::cpu_threads as threads;

/// Rows of one register tile of [`matmul`].
const TILE_ROWS: usize = 6;
/// Rows per thread task of [`matmul`] (a multiple of [`TILE_ROWS`]).
const TASK_ROWS: usize = 96;

static FORCE_SCALAR: AtomicBool = AtomicBool::new(false);

/// Run the kernels on the scalar fallback (one f32 per "vector") instead of the widest
/// vector instructions of the CPU, for comparisons; returns the previous setting. The
/// results are the same either way: that is what the tests check.
pub fn force_scalar(on: bool) -> bool {
    FORCE_SCALAR.swap(on, Ordering::SeqCst)
}

/// The instruction set the kernels run on.
fn arch() -> Arch {
    if FORCE_SCALAR.load(Ordering::SeqCst) {
        Arch::Scalar
    } else {
        Arch::detect()
    }
}

/// Runs `f(first_item, part)` over `data` cut into parts of whole `unit`-value items, at
/// most `items_per_task` items each, over the CPU threads. Which thread takes a part never
/// changes what is computed in it.
pub(super) fn par_items(
    data: &mut [f32],
    unit: usize,
    items_per_task: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let unit = unit.max(1);
    let per_task = items_per_task.max(1) * unit;
    let tasks: Vec<(usize, &mut [f32])> = data
        .chunks_mut(per_task)
        .enumerate()
        .map(|(t, part)| (t * items_per_task.max(1), part))
        .collect();
    let workers = threads().min(tasks.len()).max(1);
    if workers == 1 {
        tasks.into_iter().for_each(|(first, part)| f(first, part));
        return;
    }
    let queue = std::sync::Mutex::new(tasks);
    let work = || {
        loop {
            let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
            match next {
                Some((first, part)) => f(first, part),
                None => break,
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
}

/// `a [m, k] @ b [k, n] (+ bias [n])`, row-major, in the order stated in the module docs;
/// rows split over the CPU threads.
///
/// # Panics
/// When the slices do not have the sizes the dimensions give (a programming error: the
/// callers size them from the parameters).
pub(super) fn matmul(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let product = Product::new(b, k, n, bias);
    let mut out = vec![0.0f32; m * n];
    assert_eq!(a.len(), m * k, "matmul: a is not [{m}, {k}]");
    par_items(&mut out, n, TASK_ROWS, |first, part| {
        let rows = part.len() / n.max(1);
        product.rows(&a[first * k..(first + rows) * k], part);
    });
    out
}

/// The right-hand side of products, packed once for the vector width: `x [rows, k] @ b
/// [k, n] (+ bias)`.
pub(super) struct Product<'a> {
    arch: Arch,
    packed: Vec<f32>,
    nr: usize,
    k: usize,
    n: usize,
    bias: Option<&'a [f32]>,
}

impl<'a> Product<'a> {
    /// Pack `b [k, n]` (and keep `bias [n]`).
    ///
    /// # Panics
    /// When `b` or `bias` do not have the sizes `k` and `n` give.
    pub(super) fn new(b: &[f32], k: usize, n: usize, bias: Option<&'a [f32]>) -> Self {
        assert_eq!(b.len(), k * n, "matmul: b is not [{k}, {n}]");
        assert!(
            bias.is_none_or(|b| b.len() == n),
            "matmul: bias is not [{n}]"
        );
        let arch = arch();
        // SAFETY: `arch` is the detected instruction set or the scalar fallback.
        let nr = 2 * unsafe { lanes(arch) };
        Self {
            arch,
            packed: pack_panels(b, k, n, nr),
            nr,
            k,
            n,
            bias,
        }
    }

    /// `out [rows, n] = a [rows, k] @ b (+ bias)` on this thread.
    pub(super) fn rows(&self, a: &[f32], out: &mut [f32]) {
        let rows = out.len() / self.n.max(1);
        assert!(
            a.len() == rows * self.k && out.len() == rows * self.n,
            "matmul: sizes"
        );
        if rows == 0 || self.n == 0 {
            return;
        }
        struct Rows<'p, 'b, 'o> {
            p: &'p Product<'b>,
            a: &'o [f32],
            out: &'o mut [f32],
        }
        impl macerator::WithSimd for Rows<'_, '_, '_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self) {
                rows_impl::<S>(self.p, self.a, self.out)
            }
        }
        // SAFETY: `arch` is available (see `new`); `packed` was laid out for its lanes.
        unsafe { self.arch.dispatch(Rows { p: self, a, out }) }
    }
}

/// f32 lanes of `arch`'s vectors.
///
/// # Safety
/// `arch` is available on this CPU.
unsafe fn lanes(arch: Arch) -> usize {
    struct Lanes;
    impl macerator::WithSimd for Lanes {
        type Output = usize;
        fn with_simd<S: Simd>(self) -> usize {
            S::lanes32()
        }
    }
    // SAFETY: the caller's promise.
    unsafe { arch.dispatch(Lanes) }
}

/// `b [k, n]` as panels of `nr` columns, each `[k, nr]` row-major, the last one padded
/// with zeros (products with them are computed and dropped).
fn pack_panels(b: &[f32], k: usize, n: usize, nr: usize) -> Vec<f32> {
    let panels = n.div_ceil(nr);
    let mut packed = vec![0.0f32; panels * k * nr];
    for p in 0..panels {
        let (j0, width) = (p * nr, nr.min(n - p * nr));
        for kk in 0..k {
            let dst = &mut packed[(p * k + kk) * nr..(p * k + kk) * nr + width];
            dst.copy_from_slice(&b[kk * n + j0..kk * n + j0 + width]);
        }
    }
    packed
}

#[inline(always)]
fn rows_impl<S: Simd>(p: &Product, a: &[f32], out: &mut [f32]) {
    let (k, packed, nr, n, bias) = (p.k, p.packed.as_slice(), p.nr, p.n, p.bias);
    let lanes = S::lanes32();
    assert_eq!(
        nr,
        2 * lanes,
        "matmul: panels packed for another vector width"
    );
    let rows = out.len() / n;
    let zero: Vector<S, f32> = 0.0f32.splat::<S>();
    let mut tmp = [0.0f32; 64];
    for p in 0..n.div_ceil(nr) {
        let (j0, width) = (p * nr, nr.min(n - p * nr));
        let panel = &packed[p * k * nr..(p + 1) * k * nr];
        let mut i0 = 0;
        while i0 < rows {
            let h = TILE_ROWS.min(rows - i0);
            // Rows past `h` repeat the last one (computed and dropped).
            let row: [&[f32]; TILE_ROWS] =
                std::array::from_fn(|i| &a[(i0 + i.min(h - 1)) * k..(i0 + i.min(h - 1) + 1) * k]);
            let mut acc = [[zero; 2]; TILE_ROWS];
            for (kk, b) in panel.chunks_exact(nr).enumerate() {
                // SAFETY: `b` holds `nr = 2 * lanes` values.
                let (b0, b1): (Vector<S, f32>, Vector<S, f32>) = unsafe {
                    (
                        vload_unaligned(b.as_ptr()),
                        vload_unaligned(b.as_ptr().add(lanes)),
                    )
                };
                for i in 0..TILE_ROWS {
                    let av: Vector<S, f32> = row[i][kk].splat::<S>();
                    // Multiply, then add: two roundings, as the scalar order.
                    acc[i][0] += av * b0;
                    acc[i][1] += av * b1;
                }
            }
            for (i, acc) in acc.iter().enumerate().take(h) {
                // SAFETY: `tmp` holds 64 >= 2 * lanes values (at most 16 lanes of f32).
                unsafe {
                    vstore_unaligned(tmp.as_mut_ptr(), acc[0]);
                    vstore_unaligned(tmp.as_mut_ptr().add(lanes), acc[1]);
                }
                let dst = &mut out[(i0 + i) * n + j0..(i0 + i) * n + j0 + width];
                match bias {
                    Some(b) => {
                        for ((d, &v), &b) in dst.iter_mut().zip(&tmp[..width]).zip(&b[j0..]) {
                            *d = v + b;
                        }
                    }
                    None => dst.copy_from_slice(&tmp[..width]),
                }
            }
            i0 += TILE_ROWS;
        }
    }
}

/// `x [rows, cols]` transposed to `[cols, rows]`.
pub(super) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// Exact GELU, `0.5 x (1 + erf(x / √2))`, in place.
pub(super) fn gelu(values: &mut [f32]) {
    par_items(values, 1, 1 << 16, |_, part| {
        for v in part {
            *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// ReLU in place.
pub(super) fn relu(values: &mut [f32]) {
    for v in values {
        *v = v.max(0.0);
    }
}

/// LayerNorm of every row of `x [rows, c]` in place: `(x - mean) / sqrt(var + eps) * gamma
/// + beta` with the biased variance, each sum left to right.
pub(super) fn layer_norm(x: &mut [f32], c: usize, gamma: &[f32], beta: Option<&[f32]>, eps: f32) {
    assert!(gamma.len() == c && beta.is_none_or(|b| b.len() == c));
    par_items(x, c, 1024, |_, part| {
        for row in part.chunks_exact_mut(c) {
            let mean = row.iter().fold(0.0f32, |s, &v| s + v) / c as f32;
            for v in row.iter_mut() {
                *v -= mean;
            }
            let var = row.iter().fold(0.0f32, |s, &v| s + v * v) / c as f32;
            let inv = (var + eps).sqrt();
            for (j, v) in row.iter_mut().enumerate() {
                *v = *v / inv * gamma[j] + beta.map_or(0.0, |b| b[j]);
            }
        }
    });
}

/// Softmax of every row of `x [rows, n]` in place: `exp(x - max) / sum`.
pub(super) fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n.max(1)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = libm::expf(*v - max);
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// A depthwise 3x3 convolution, zero padding 1, stride `stride`, on channels-last
/// `x [h, w, c]` with `weight [c, 3, 3]` and `bias [c]`: `-> [h', w', c]`. Each output is
/// `bias + Σ taps` over the taps inside the image in row-major tap order.
pub(super) fn depthwise3x3(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    weight: &[f32],
    bias: &[f32],
    stride: usize,
) -> Vec<f32> {
    assert!(x.len() == h * w * c && weight.len() == c * 9 && bias.len() == c && stride >= 1);
    let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    // Taps per channel laid out `[9, c]` so that the inner loop runs over channels.
    let taps = transpose(weight, c, 9);
    let mut out = vec![0.0f32; ho * wo * c];
    par_items(&mut out, wo * c, 8, |first, part| {
        for (r, row) in part.chunks_exact_mut(wo * c).enumerate() {
            let oy = first + r;
            for ox in 0..wo {
                let dst = &mut row[ox * c..(ox + 1) * c];
                dst.copy_from_slice(bias);
                for t in 0..9 {
                    let (iy, ix) = (
                        (oy * stride + t / 3) as isize - 1,
                        (ox * stride + t % 3) as isize - 1,
                    );
                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                        continue;
                    }
                    let src = &x[(iy as usize * w + ix as usize) * c..][..c];
                    let k = &taps[t * c..(t + 1) * c];
                    for ((d, &v), &k) in dst.iter_mut().zip(src).zip(k) {
                        *d += v * k;
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in -1..1 with some of every magnitude.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s as f32 / u32::MAX as f32) * 2.0 - 1.0;
                v * [1.0, 1e-3, 37.0, 1e-6][i % 4]
            })
            .collect()
    }

    /// The obviously ordered product: one output at a time, `k` in order.
    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for kk in 0..k {
                    s += a[i * k + kk] * b[kk * n + j];
                }
                out[i * n + j] = bias.map_or(s, |b| s + b[j]);
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The vector kernel, on every instruction set and tile edge, gives the bits of the
    /// one-output-at-a-time order (a fused multiply-add anywhere would differ in the last
    /// bit of many of these sums).
    #[test]
    fn matmul_is_bitwise_the_sequential_order_on_every_vector_width() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 256, 33),
            (13, 5, 64),
            (200, 97, 130),
            (96, 2048, 17),
        ] {
            let a = values(m * k, 3 + m as u32);
            let b = values(k * n, 5 + n as u32);
            let bias = values(n, 7);
            for with_bias in [None, Some(bias.as_slice())] {
                let want = bits(&naive(&a, m, k, &b, n, with_bias));
                let was = force_scalar(false);
                let fast = bits(&matmul(&a, m, k, &b, n, with_bias));
                force_scalar(true);
                let scalar = bits(&matmul(&a, m, k, &b, n, with_bias));
                force_scalar(was);
                assert_eq!(fast, want, "{m}x{k}x{n}, vectors");
                assert_eq!(scalar, want, "{m}x{k}x{n}, scalar");
            }
        }
    }

    /// The depthwise convolution equals a direct evaluation of its stated order.
    #[test]
    fn depthwise3x3_is_the_stated_order() {
        let (h, w, c) = (5, 7, 3);
        let x = values(h * w * c, 11);
        let weight = values(c * 9, 13);
        let bias = values(c, 17);
        for stride in [1, 2] {
            let got = depthwise3x3(&x, h, w, c, &weight, &bias, stride);
            let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
            for oy in 0..ho {
                for ox in 0..wo {
                    for ch in 0..c {
                        let mut s = bias[ch];
                        for t in 0..9 {
                            let iy = (oy * stride + t / 3) as isize - 1;
                            let ix = (ox * stride + t % 3) as isize - 1;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += x[(iy as usize * w + ix as usize) * c + ch]
                                    * weight[ch * 9 + t];
                            }
                        }
                        assert_eq!(got[(oy * wo + ox) * c + ch].to_bits(), s.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_and_layer_norm_are_normalised() {
        let mut x = values(3 * 10, 19);
        softmax_rows(&mut x, 10);
        for row in x.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let mut y = values(2 * 16, 23);
        layer_norm(&mut y, 16, &[1.0; 16], None, 1e-6);
        for row in y.chunks(16) {
            let mean: f32 = row.iter().sum::<f32>() / 16.0;
            let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 16.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }
}
