//! Elementwise activations and row softmax on the flex backend: GELU with a vectorised
//! `erf`, softmax with a branch-free `exp`, both in place and split over the threads.

use burn::backend::Flex;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::activation;
use burn::tensor::{Bytes, DType, Tensor};

use super::flex::*;
use super::parallel::*;

/// Exact GELU, `x * Φ(x) = 0.5 x (1 + erf(x / √2))`, as `burn::tensor::activation::gelu`
/// (and PyTorch's `nn.GELU()`), for any shape. Same shape out; on the flex backend with f32
/// data computed by [`erf`] (max |Δ| to libm's `erff` below 1e-6, see the tests).
pub(crate) fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex_f32(&x) {
        return activation::gelu(x);
    }
    Tensor::from_primitive::<Flex>(map_f32(primitive(x), 1, gelu_slice))
}

/// Softmax along `dim`, as `burn::tensor::activation::softmax`. On the flex backend with
/// f32 data and `dim` the last axis (every softmax of the model: attention rows), one fused
/// pass per row (max, [`exp`], sum, scale on a row in cache) with rows split over the threads; burn-flex
/// makes five passes on one thread with libm `expf` (9.5 ms for TinyViT's stage-2 scores,
/// `[25, 5, 196, 196]`). Same shape out.
pub(crate) fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let n = x.dims()[D - 1];
    if dim != D - 1 || n == 0 || !on_flex_f32(&x) {
        return activation::softmax(x, dim);
    }
    Tensor::from_primitive::<Flex>(map_f32(primitive(x), n, |rows| softmax_rows(rows, n)))
}

/// [`softmax_body`] compiled for the widest vector instructions this CPU has (AVX2 or
/// AVX-512 on x86-64, chosen at run time by `macerator`; SIMD128 in wasm).
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
pub(super) fn softmax_rows<S: macerator::Simd>(rows: &mut [f32], n: usize) {
    softmax_body(rows, n)
}

#[inline(always)]
pub(super) fn softmax_body(rows: &mut [f32], n: usize) {
    for row in rows.chunks_mut(n) {
        let max = lanes_fold(row, f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / lanes_fold(row, 0.0, |a, b| a + b);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `values` folded with `f` over eight interleaved lanes, then the lanes folded: an order
/// the compiler can vectorise (a sequential f32 fold cannot be reordered).
#[inline(always)]
pub(super) fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = f(*l, v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    lanes.iter().fold(tail, |a, &l| f(a, l))
}

/// `exp` for f32, branch-free (Cephes `expf`: `x = n ln2 + r`, a degree-6 polynomial for
/// `e^r`, `2^n` through the exponent bits); inputs clamped to [-87.3, 88.3], within the
/// normal f32 range of the result, and 0 below. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let input = x;
    let x = x.clamp(-87.3, 88.3);
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    for c in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p * r + c;
    }
    // `k`'s low mantissa bits hold `n` (two's complement): `(n + 127) << 23` is `2^n`.
    let e = (p * r * r + r + 1.0) * f32::from_bits(k.to_bits().wrapping_add(127) << 23);
    // Below the clamp the true value is under 1.2e-38: 0, so that softmax rows far below
    // their maximum weigh nothing, as with libm.
    if input < -87.3 { 0.0 } else { e }
}

/// [`gelu_body`] for the widest vector instructions this CPU has (as [`softmax_rows`]).
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
pub(super) fn gelu_slice<S: macerator::Simd>(values: &mut [f32]) {
    gelu_body(values)
}

#[inline(always)]
pub(super) fn gelu_body(values: &mut [f32]) {
    for v in values {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` for f32 as a branch-free rational function, `x P(x²) / Q(x²)` on `x` clamped to
/// [-4, 4] (beyond which erf rounds to ±1 in f32). The coefficients are XLA's and Eigen's
/// (`ErfImpl32`, `generic_fast_erf_float`); NaN stays NaN.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for a in &ALPHA[1..] {
        p = p * x2 + a;
    }
    let mut q = BETA[0];
    for b in &BETA[1..] {
        q = q * x2 + b;
    }
    x * p / q
}

/// Applies `f` to the values of an f32 tensor, `unit` values (one row) at a time, rows
/// split over the threads: in place when the tensor owns its storage contiguously from
/// offset 0 (the usual case: a fresh op output), else into a new contiguous tensor.
pub(super) fn map_f32(mut t: FlexTensor, unit: usize, f: impl Fn(&mut [f32]) + Sync) -> FlexTensor {
    let n = t.layout().num_elements();
    let in_place = t.is_unique() && t.layout().contiguous_offsets() == Some((0, n));
    if in_place && let Some(storage) = t.try_storage_mut::<f32>() {
        par_split(&mut storage[..n], unit, &f);
        return t;
    }
    let shape = t.layout().shape().clone();
    let c = t.to_contiguous();
    let mut values = match c.as_slice::<f32>() {
        Some(s) => s.to_vec(),
        // Unreachable: `to_contiguous` returns a contiguous f32 tensor.
        None => panic!("to_contiguous gave a non-contiguous tensor"),
    };
    par_split(&mut values, unit, &f);
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}
