//! Linear layers through a register-tiled product (8+ f32 lanes), with GELU and residuals
//! applied while the output is in cache.

use burn::nn::Linear;
use burn::tensor::Tensor;

use super::activation::*;
use super::flex::*;
use super::parallel::*;

/// `layer.forward(x)` for `x [.., K]`: `x W + b` with `W [K, N]`. On the flex backend with
/// f32 data and weights (quantized weights go to Burn), at least `LINEAR_MIN_ROWS` (64) rows
/// and vectors of 8 or more f32 lanes (AVX2, AVX-512; on 128-bit vectors, wasm SIMD128
/// among them, the `gemm` crate's kernels were faster: docs/benchmarks-history.md), our own product: the weights packed once per call into column panels of two
/// vectors, rows split over the threads in blocks of 96, each `6 x 2-vector` tile
/// accumulated in registers over the whole K (in slices that keep the panel in L1) and
/// stored once with the bias added. Compiled per instruction set at run time (AVX-512,
/// AVX2, NEON, SIMD128). The `gemm` crate behind Burn's matmul packs both operands on
/// every call and adds the bias in a second pass; on TinyViT's projections this is
/// 0.66–0.99x of its time (docs/benchmarks-history.md).
pub(crate) fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, None, false)
}

/// `gelu(layer.forward(x))` ([`linear`] with exact GELU applied to each block of rows
/// while it is in cache: no separate pass over the output).
pub(crate) fn linear_gelu<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, None, true)
}

/// `residual + layer.forward(x)` ([`linear`] with the residual added to each block of
/// rows while it is in cache), `residual` of the output's shape.
pub(crate) fn linear_add<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
) -> Tensor<D> {
    linear_with(layer, x, Some(residual), false)
}

/// [`linear`] plus `residual`, then GELU when `then_gelu`; elsewhere Burn's operations.
pub(super) fn linear_with<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    residual: Option<Tensor<D>>,
    then_gelu: bool,
) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let (w, b) = (weight.clone(), bias.clone());
    product_with(x, weight, bias, residual, then_gelu, move |x| {
        burn::tensor::module::linear(x, w, b)
    })
}

/// `x [.., K] @ weight [K, N] + bias (+ residual)`, GELU'd when `then_gelu`, through
/// [`linear`]'s kernel where it applies; elsewhere `plain(x)` (which computes
/// `x @ weight + bias`), then the residual, then GELU.
pub(super) fn product_with<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
    then_gelu: bool,
    plain: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    let [wk, n] = weight.dims();
    let lanes = lanes32();
    let fits = wk == k
        && lanes >= 8
        && m >= LINEAR_MIN_ROWS
        && k > 0
        && n > 0
        && on_flex_f32(&x)
        && on_flex_f32(&weight)
        && bias
            .as_ref()
            .is_none_or(|b| b.dims() == [n] && on_flex_f32(b))
        && residual.as_ref().is_none_or(|r| {
            r.dims()[..D - 1] == dims[..D - 1] && r.dims()[D - 1] == n && on_flex_f32(r)
        });
    if !fits {
        return add_then_gelu(plain(x), residual, then_gelu);
    }
    let x = contiguous(x);
    let weight = contiguous(weight);
    let bias = bias.map(contiguous);
    let residual = residual.map(contiguous);
    let (xs, ws) = (values(&x), values(&weight));
    let bs = bias.as_ref().map_or(&[][..], values);
    let rs = residual.as_ref().map(values);
    // Weights in panels of `nr` columns, `[panel][k][nr]`, the last one zero-padded.
    let nr = 2 * lanes;
    let panels = n.div_ceil(nr);
    let mut packed = vec![0.0f32; panels * k * nr];
    for (p, panel) in packed.chunks_mut(k * nr).enumerate() {
        let j0 = p * nr;
        let width = nr.min(n - j0);
        for (kk, dst) in panel.chunks_mut(nr).enumerate() {
            dst[..width].copy_from_slice(&ws[kk * n + j0..kk * n + j0 + width]);
        }
    }
    let mut out = Output::new(m * n);
    let out_ptr = out.ptr();
    let blocks = m.div_ceil(LINEAR_BLOCK_ROWS);
    par_tasks(blocks, |t| {
        let r0 = t * LINEAR_BLOCK_ROWS;
        let rows = LINEAR_BLOCK_ROWS.min(m - r0);
        // SAFETY: rows `r0..r0 + rows` of `out` belong to this task alone; zeroed here
        // (in cache, right before use: cheaper than a zeroed allocation's separate pass)
        // so that the tiles work on initialised values.
        unsafe {
            let dst = out_ptr.zeroed(r0 * n, rows * n);
            linear_block(
                &xs[r0 * k..(r0 + rows) * k],
                k,
                &packed,
                nr,
                bs,
                rs.map(|r| &r[r0 * n..(r0 + rows) * n]),
                then_gelu,
                dst.as_mut_ptr(),
                rows,
                n,
            )
        };
    });
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    // SAFETY: the blocks cover all `m` rows.
    from_values(unsafe { out.written() }, out_dims)
}

/// Rows below which [`linear`] leaves the product to Burn (the decoder's few tokens).
pub(super) const LINEAR_MIN_ROWS: usize = 64;

/// Rows per task of [`linear`] (a multiple of the tile's 6).
pub(super) const LINEAR_BLOCK_ROWS: usize = 96;

/// Rows of one register tile of [`linear`].
pub(super) const TILE_ROWS: usize = 6;

/// f32 lanes of the widest vectors this CPU has.
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
pub(super) fn lanes32<S: macerator::Simd>() -> usize {
    S::lanes32()
}

/// `c = a [rows, k] @ panels + bias (+ residual)` for one block of rows (`c` and
/// `residual` row-major, `n` columns), GELU'd when `then_gelu`.
///
/// # Safety
/// `c` addresses `rows * n` initialised values that no other reference aliases.
#[macerator::with_simd]
#[allow(clippy::too_many_arguments)]
// `with_simd` needs the lifetime of an `Option<&[f32]>` argument spelled out.
#[allow(clippy::needless_lifetimes)]
pub(super) unsafe fn linear_block<'a, S: macerator::Simd>(
    a: &[f32],
    k: usize,
    packed: &[f32],
    nr: usize,
    bias: &[f32],
    residual: Option<&'a [f32]>,
    then_gelu: bool,
    c: *mut f32,
    rows: usize,
    n: usize,
) {
    let lanes = S::lanes32();
    if nr != 2 * lanes {
        // Unreachable: `packed` was laid out for this CPU's vectors.
        panic!("linear: panel width {nr} for {lanes}-lane vectors");
    }
    // K slices whose panel part (k x nr values) stays within 16 KiB of L1.
    let kc = (4096 / nr).max(16);
    let panels = n.div_ceil(nr);
    let mut k0 = 0;
    while k0 < k {
        let kl = kc.min(k - k0);
        for p in 0..panels {
            let j0 = p * nr;
            let width = nr.min(n - j0);
            let panel = &packed[p * k * nr + k0 * nr..p * k * nr + (k0 + kl) * nr];
            let b = (k0 == 0 && !bias.is_empty()).then(|| &bias[j0..j0 + width]);
            let mut i0 = 0;
            while i0 < rows {
                let h = TILE_ROWS.min(rows - i0);
                // SAFETY: rows `i0..i0 + h`, columns `j0..j0 + width` of `c`; the first
                // K slice (k0 == 0) stores them before later slices add to them.
                unsafe {
                    linear_tile::<S>(
                        &a[i0 * k + k0..],
                        k,
                        kl,
                        h,
                        panel,
                        c.add(i0 * n + j0),
                        n,
                        width,
                        k0 == 0,
                        b,
                    )
                };
                i0 += TILE_ROWS;
            }
        }
        k0 += kl;
    }
    if residual.is_some() || then_gelu {
        // The block (at most 96 rows) is still in cache: the residual and GELU in one
        // pass over it. (Applied per tile as it is stored, they made every product 3-8%
        // slower, GELU-free ones too.)
        // SAFETY: the caller's promise; every value was stored by the first K slice.
        let block = unsafe { std::slice::from_raw_parts_mut(c, rows * n) };
        if let Some(r) = residual {
            block.iter_mut().zip(r).for_each(|(v, &r)| *v += r);
        }
        if then_gelu {
            gelu_body(block);
        }
    }
}

/// One tile: `h <= 6` rows of `a` (stride `lda`, `kl` values used) times a `kl x 2-vector`
/// panel slice, added to `c` (stride `ldc`, `width` columns used), or stored with `bias`
/// (per column) when `first`.
///
/// # Safety
/// `c` addresses `h` rows of `width` initialised values at stride `ldc` that no other
/// reference aliases.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn linear_tile<S: macerator::Simd>(
    a: &[f32],
    lda: usize,
    kl: usize,
    h: usize,
    panel: &[f32],
    c: *mut f32,
    ldc: usize,
    width: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    use macerator::{Scalar, Vector, vload_unaligned, vstore_unaligned};
    let lanes = S::lanes32();
    let nr = 2 * lanes;
    let zero: Vector<S, f32> = 0.0f32.splat::<S>();
    let mut acc = [[zero; 2]; TILE_ROWS];
    // The loop reads `kl` values of each of the `h` rows and `kl * nr` panel values;
    // checked once here, so that the loop itself runs without bounds checks.
    assert!(h >= 1 && (h - 1) * lda + kl <= a.len() && kl * nr <= panel.len() && width <= nr);
    // Rows past `h` repeat the last row (their sums are computed and dropped).
    let row: [*const f32; TILE_ROWS] = std::array::from_fn(|i| a[i.min(h - 1) * lda..].as_ptr());
    let mut bp = panel.as_ptr();
    for p in 0..kl {
        // SAFETY: `p < kl` and `bp` = panel + p * nr: within each row and within the panel
        // (asserted above). (Pointer bumps, not index products: no overflow checks here.)
        unsafe {
            let b0: Vector<S, f32> = vload_unaligned(bp);
            let b1: Vector<S, f32> = vload_unaligned(bp.add(lanes));
            for i in 0..TILE_ROWS {
                let av = (*row[i].add(p)).splat::<S>();
                acc[i][0] = av.mul_add(b0, acc[i][0]);
                acc[i][1] = av.mul_add(b1, acc[i][1]);
            }
            bp = bp.add(nr);
        }
    }
    let mut tmp = [0.0f32; 128];
    for (i, acc) in acc.iter().enumerate().take(h) {
        // SAFETY: `tmp` holds 128 >= 2 * lanes values (lanes <= 16 on every backend); the
        // row `i` of `c` is the caller's promise.
        let dst = unsafe {
            vstore_unaligned(tmp.as_mut_ptr(), acc[0]);
            vstore_unaligned(tmp.as_mut_ptr().add(lanes), acc[1]);
            std::slice::from_raw_parts_mut(c.add(i * ldc), width)
        };
        if !first {
            for (d, &v) in dst.iter_mut().zip(&tmp[..width]) {
                *d += v;
            }
        } else if let Some(b) = bias {
            for ((d, &v), &b) in dst.iter_mut().zip(&tmp[..width]).zip(b) {
                *d = v + b;
            }
        } else {
            dst.copy_from_slice(&tmp[..width]);
        }
    }
}
