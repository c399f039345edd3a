//! Fast paths for Burn's CPU backend (flex) where burn-flex 0.22.1 is slow; every other
//! device gets Burn's own operation.
//!
//! burn-flex computes elementwise operations on one thread, and GELU with libm's scalar
//! `erff` per element: 183 ms on a `[1,256,256,256]` tensor, the size of TinyViT's first
//! stage, where the encoder applies it four times (docs/benchmarks-history.md, "Where the encoder's time
//! goes"). Here GELU runs in place on the tensor's own storage (no copy when the tensor is
//! not shared), with a branch-free rational `erf` the compiler vectorises, split over the
//! CPU threads where the platform has them. GELU's and softmax's loops are compiled once
//! per instruction set and chosen at run time (`macerator`: AVX-512 or AVX2 on x86-64,
//! NEON, SIMD128 in wasm); the baseline x86-64 target alone would give SSE2 without FMA
//! (GELU 9.3 -> 3.5 ms on `[1,256,256,256]` on this project's AVX-512 machine).

use std::sync::OnceLock;

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{DispatchDevice, Flex};
use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation;
use burn::tensor::{Bytes, DType, Shape, Tensor};

/// Elements below which splitting over threads costs more than it saves.
const MIN_PER_THREAD: usize = 1 << 16;

/// Exact GELU, `x * Φ(x) = 0.5 x (1 + erf(x / √2))`, as `burn::tensor::activation::gelu`
/// (and PyTorch's `nn.GELU()`), for any shape. Same shape out; on the flex backend with f32
/// data computed by [`erf`] (max |Δ| to libm's `erff` below 1e-6, see the tests).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
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
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
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
fn softmax_rows<S: macerator::Simd>(rows: &mut [f32], n: usize) {
    softmax_body(rows, n)
}

#[inline(always)]
fn softmax_body(rows: &mut [f32], n: usize) {
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
fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
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
pub fn exp(x: f32) -> f32 {
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

/// A depthwise 3x3 convolution with stride 1 and zero padding 1 (TinyViT's, where the fused
/// and token-layout paths do not apply), `x [B, C, H, W] -> [B, C, H, W]` with
/// `conv.weight [C, 1, 3, 3]`,
/// followed by exact GELU when `then_gelu`. burn-flex 0.22.1 takes 117 ms for the first
/// stage's `[1, 256, 256, 256]` on 2 cores; here each output row is accumulated in a
/// scratch row (in L1) from three input rows in one vectorisable pass per kernel row,
/// GELU'd there when asked (saving the separate pass over the tensor), and stored once,
/// runs of planes split over the threads. Any other convolution, device or dtype goes to
/// `conv.forward` (and [`gelu`]).
pub fn depthwise_conv3x3(conv: &Conv2d, x: Tensor<4>, then_gelu: bool) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let fits = is_depthwise_3x3(conv, c)
        && conv.stride == [1, 1]
        && w >= 2
        && on_flex_f32(&x)
        && conv_params_f32(conv);
    if !fits {
        return add_then_gelu(conv.forward(x), None, then_gelu);
    }
    let x = contiguous(x);
    let (weight, bias) = conv_params(conv);
    let (xs, ws) = (values(&x), values(&weight));
    let bs = bias.as_ref().map(values);
    let plane = h * w;
    let planes = b * c;
    let mut out = Output::new(planes * plane);
    let out_ptr = out.ptr();
    // One run of consecutive planes per thread.
    let per_task = planes.div_ceil(threads());
    par_tasks_with(
        planes.div_ceil(per_task),
        || vec![0.0f32; w],
        |row, t| {
            for p in t * per_task..planes.min((t + 1) * per_task) {
                let ch = p % c;
                let k: [f32; 9] = std::array::from_fn(|i| ws[ch * 9 + i]);
                let bias = bs.map_or(0.0, |b| b[ch]);
                let src = &xs[p * plane..(p + 1) * plane];
                // SAFETY: plane `p` of `out` is written by this task alone.
                unsafe { dw3x3_plane(row, src, &k, bias, h, w, then_gelu, out_ptr.at(p * plane)) };
            }
        },
    );
    // SAFETY: the tasks wrote every row of every plane.
    from_values(unsafe { out.written() }, [b, c, h, w])
}

/// A 1x1 convolution with stride 1, no padding and one group, plus `residual` when given,
/// then exact GELU when `then_gelu`: `x [B, C_in, H, W] -> [B, C_out, H, W]` (TinyViT's
/// patch embedding; the fused [`mbconv`] and [`patch_merging`] use its kernel row by row).
/// burn-flex 0.22.1 zero-fills the output, lets the `gemm` crate split the product over
/// threads by output channel (half speed with 64 of them) and adds the bias in a second
/// pass: 41 ms for stage 0's 256 -> 64 projection on `[1, 256, 256, 256]` on 2 cores.
/// Here each thread takes a block of pixels; with vectors of 8 or more f32 lanes (as
/// [`linear`]) it works through its block with `conv1x1_strips` (groups of pixel strips
/// packed once, [`linear`]'s register tiles, bias, residual and GELU applied in cache);
/// with narrower vectors it writes bias (+ residual) into its block, one `gemm` product
/// accumulates onto it (25 ms for the projection above) and GELU follows per block. Any
/// other convolution, device or dtype goes to `conv.forward` (then adds `residual`, then
/// [`gelu`]).
pub fn conv1x1(
    conv: &Conv2d,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    then_gelu: bool,
) -> Tensor<4> {
    let [b, c_in, h, w] = x.dims();
    let c_out = conv.weight.dims()[0];
    let fits = is_plain_1x1(conv, c_in, c_out)
        && residual
            .as_ref()
            .is_none_or(|r| r.dims() == [b, c_out, h, w] && on_flex_f32(r))
        && on_flex_f32(&x)
        && conv_params_f32(conv);
    if !fits {
        return add_then_gelu(conv.forward(x), residual, then_gelu);
    }
    let x = contiguous(x);
    let (weight, bias) = conv_params(conv);
    let residual = residual.map(contiguous);
    let (xs, ws) = (values(&x), values(&weight));
    let bs = bias.as_ref().map(values);
    let rs = residual.as_ref().map(values);
    let plane = h * w;
    let mut out = Output::new(b * c_out * plane);
    let own_kernel = lanes32() >= 8;
    // One pixel block per thread and image, of whole vectors (16 values).
    let block = plane.div_ceil(threads()).div_ceil(16).max(1) * 16;
    let blocks = plane.div_ceil(block);
    let out_ptr = out.ptr();
    par_tasks_with(
        b * blocks,
        || (Vec::new(), Vec::new()),
        |(packed, acc), t| {
            let (img, p0) = (t / blocks, (t % blocks) * block);
            let width = block.min(plane - p0);
            let image = &xs[img * c_in * plane..(img + 1) * c_in * plane];
            let res = rs.map(|r| &r[img * c_out * plane..(img + 1) * c_out * plane]);
            let dst = out_ptr.at(img * c_out * plane + p0);
            if own_kernel {
                // SAFETY: `dst` addresses `c_out` rows of `width` values at stride `plane`:
                // this (image, block) pair's part of `out`, this task's alone.
                unsafe {
                    conv1x1_strips(
                        ws,
                        &image[p0..],
                        plane,
                        bs,
                        res.map(|r| &r[p0..]),
                        width,
                        c_in,
                        c_out,
                        dst,
                        plane,
                        packed,
                        acc,
                        then_gelu,
                    )
                };
                return;
            }
            for ch in 0..c_out {
                let bias = bs.map_or(0.0, |b| b[ch]);
                // SAFETY: as above.
                unsafe {
                    let row = dst.add(ch * plane);
                    match res {
                        Some(r) => {
                            let r = &r[ch * plane + p0..ch * plane + p0 + width];
                            for (j, &v) in r.iter().enumerate() {
                                row.add(j).write(v + bias);
                            }
                        }
                        None => {
                            for j in 0..width {
                                row.add(j).write(bias);
                            }
                        }
                    }
                }
            }
            // SAFETY: as above (written now); lhs is the `[c_out, c_in]` weight matrix,
            // rhs `c_in` rows of `width` pixels at stride `plane` inside this image.
            unsafe {
                gemm::gemm(
                    c_out,
                    width,
                    c_in,
                    dst,
                    1,
                    plane as isize,
                    true,
                    ws.as_ptr(),
                    1,
                    c_in as isize,
                    image.as_ptr().add(p0),
                    1,
                    plane as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            if then_gelu {
                for ch in 0..c_out {
                    // SAFETY: row `ch` of this task's block, written above.
                    gelu_slice(unsafe {
                        std::slice::from_raw_parts_mut(dst.add(ch * plane), width)
                    });
                }
            }
        },
    );
    // SAFETY: the tasks wrote every (image, channel, pixel).
    from_values(unsafe { out.written() }, [b, c_out, h, w])
}

/// Strips of [`conv1x1_strips`] packed and computed together (`8 x 2` vectors of pixels:
/// 256 on AVX-512, each input row read as one contiguous kilobyte).
const CONV_STRIPS: usize = 8;

/// [`conv1x1`]'s own product for `width` pixels: `out [c_out, width] (rows out_stride
/// apart) = w [c_out, c_in] @ x [c_in, width] (rows x_stride apart) + bias (+ residual,
/// laid out as out)`, GELU'd when `then_gelu`. The block goes in groups
/// of [`CONV_STRIPS`] strips of `2 * lanes` pixels: every input channel's part of the
/// group is packed strip by strip (`[strip][c_in][2 * lanes]`), the products of each strip
/// go to `acc` (`[c_out, group]`, in cache), then bias, residual and GELU are applied on
/// the way out, one contiguous run per output channel. (Rows of `x` and `out` lie a
/// whole plane apart and share cache sets: strips of one vector pair, read and written in
/// place, were slower than the `gemm` crate.)
///
/// # Safety
/// `out` addresses `c_out` rows of `width` writable values at stride `out_stride` that no
/// other reference aliases.
#[macerator::with_simd]
#[allow(clippy::too_many_arguments)]
unsafe fn conv1x1_strips<'a, S: macerator::Simd>(
    w: &[f32],
    x: &[f32],
    x_stride: usize,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    width: usize,
    c_in: usize,
    c_out: usize,
    out: *mut f32,
    out_stride: usize,
    packed: &mut Vec<f32>,
    acc: &mut Vec<f32>,
    then_gelu: bool,
) {
    let nr = 2 * S::lanes32();
    let group = CONV_STRIPS * nr;
    let kc = (4096 / nr).max(16);
    packed.clear();
    packed.resize(CONV_STRIPS * c_in * nr, 0.0);
    acc.clear();
    acc.resize(c_out * group, 0.0);
    let mut g0 = 0;
    while g0 < width {
        let gw = group.min(width - g0);
        let strips = gw.div_ceil(nr);
        for ci in 0..c_in {
            let src = &x[ci * x_stride + g0..ci * x_stride + g0 + gw];
            for (s, part) in src.chunks(nr).enumerate() {
                let dst = &mut packed[(s * c_in + ci) * nr..(s * c_in + ci + 1) * nr];
                dst[..part.len()].copy_from_slice(part);
                dst[part.len()..].fill(0.0);
            }
        }
        for s in 0..strips {
            let mut k0 = 0;
            while k0 < c_in {
                let kl = kc.min(c_in - k0);
                let panel = &packed[(s * c_in + k0) * nr..(s * c_in + k0 + kl) * nr];
                let mut co = 0;
                while co < c_out {
                    let h = TILE_ROWS.min(c_out - co);
                    // SAFETY: rows `co..co + h`, columns `s * nr..(s + 1) * nr` of `acc`
                    // (`[c_out, group]`, initialised); the first K slice stores them,
                    // later ones add.
                    unsafe {
                        linear_tile::<S>(
                            &w[co * c_in + k0..],
                            c_in,
                            kl,
                            h,
                            panel,
                            acc.as_mut_ptr().add(co * group + s * nr),
                            group,
                            nr,
                            k0 == 0,
                            None,
                        )
                    };
                    co += TILE_ROWS;
                }
                k0 += kl;
            }
        }
        for (co, row) in acc.chunks_mut(group).enumerate() {
            let row = &mut row[..gw];
            let b = bias.map_or(0.0, |b| b[co]);
            match residual {
                Some(r) => {
                    let r = &r[co * out_stride + g0..co * out_stride + g0 + gw];
                    for (v, &r) in row.iter_mut().zip(r) {
                        *v += b + r;
                    }
                }
                None => row.iter_mut().for_each(|v| *v += b),
            }
            if then_gelu {
                gelu_body(row);
            }
            // SAFETY: row `co`, pixels `g0..g0 + gw` of `out` (the caller's promise).
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(co * out_stride + g0), gw)
            };
        }
        g0 += gw;
    }
}

/// TinyViT's MBConv, `gelu(conv3(gelu(dw(gelu(conv1(x))))) + x)`, with `conv1` a 1x1
/// expansion `[C, C_h]`, `dw` a depthwise 3x3 (stride 1, padding 1) on `C_h` channels and
/// `conv3` a 1x1 projection back to `C`: `x [B, C, H, W] -> [B, C, H, W]`. On the flex
/// backend with f32 data and vectors of 8 or more f32 lanes, row by row through cache:
/// each thread takes a band of image rows and keeps the expansion's last three rows
/// (`3 x C_h x W`) in a ring, so that every output row is the depthwise convolution of
/// three cached rows followed by the projection; the two `C_h`-channel intermediates
/// (64 MiB each in stage 0) are never written out. The arithmetic is that of
/// [`conv1x1`] and [`depthwise_conv3x3`], in the same order. Elsewhere those two in turn.
pub fn mbconv(conv1: &Conv2d, dw: &Conv2d, conv3: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv_block(conv1, dw, conv3, x, true)
}

/// TinyViT's patch merging out of stage 0, `conv3(gelu(dw(gelu(conv1(x)))))` with a
/// stride-2 (or 1) depthwise `dw`: `x [B, C, H, W] -> [B, C_out, H', W']`, fused row by row
/// as [`mbconv`] (no shortcut).
pub fn patch_merging(conv1: &Conv2d, dw: &Conv2d, conv3: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv_block(conv1, dw, conv3, x, false)
}

/// [`mbconv`] (`residual`: shortcut added and GELU last, `dw` stride 1) or
/// [`patch_merging`].
fn conv_block(
    conv1: &Conv2d,
    dw: &Conv2d,
    conv3: &Conv2d,
    x: Tensor<4>,
    residual: bool,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let hidden = conv1.weight.dims()[0];
    let c_out = conv3.weight.dims()[0];
    let stride = dw.stride[0];
    let fits = is_plain_1x1(conv1, c, hidden)
        && conv_params_f32(conv1)
        && is_plain_1x1(conv3, hidden, c_out)
        && conv_params_f32(conv3)
        && is_depthwise_3x3(dw, hidden)
        && (dw.stride == [1, 1] || (dw.stride == [2, 2] && !residual))
        && (!residual || c_out == c)
        && conv_params_f32(dw)
        && w >= 2
        && h >= 1
        && lanes32() >= 8
        && on_flex_f32(&x);
    if !fits {
        let y = conv1x1(conv1, x.clone(), None, true);
        let y = depthwise_conv3x3(dw, y, true);
        return conv1x1(conv3, y, residual.then_some(x), residual);
    }
    let x = contiguous(x);
    let xs = values(&x);
    let ((w1, b1), (wd, bd), (w3, b3)) = (conv_params(conv1), conv_params(dw), conv_params(conv3));
    let (w1, wd, w3) = (values(&w1), values(&wd), values(&w3));
    let (b1, bd, b3) = (
        b1.as_ref().map(values),
        bd.as_ref().map(values),
        b3.as_ref().map(values),
    );
    let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let block = ConvBlock {
        w1,
        b1,
        wd,
        bd,
        w3,
        b3,
        c,
        hidden,
        c_out,
        h,
        w,
        stride,
        residual,
    };
    let mut out = Output::new(b * c_out * ho * wo);
    let out_ptr = out.ptr();
    let rows_per_band = ho.div_ceil(threads());
    let bands = ho.div_ceil(rows_per_band);
    par_tasks_with(
        b * bands,
        || {
            (
                vec![0.0f32; 3 * hidden * w],
                vec![0.0f32; hidden * wo + 2 * w],
                Vec::new(),
                Vec::new(),
            )
        },
        |(ring, mid, packed, acc), t| {
            let (img, band) = (t / bands, t % bands);
            let (y0, y1) = (band * rows_per_band, ho.min((band + 1) * rows_per_band));
            let image = &xs[img * c * h * w..(img + 1) * c * h * w];
            let dst = out_ptr.at(img * c_out * ho * wo);
            // SAFETY: output rows `y0..y1` of image `img` of `out` belong to this task
            // alone; the ring and `mid` are this task's scratch.
            unsafe { conv_block_band(&block, image, y0, y1, ring, mid, packed, acc, dst) };
        },
    );
    // SAFETY: the bands cover every output row of every image.
    from_values(unsafe { out.written() }, [b, c_out, ho, wo])
}

/// The parameters and sizes of one [`conv_block`].
struct ConvBlock<'a> {
    w1: &'a [f32],
    b1: Option<&'a [f32]>,
    wd: &'a [f32],
    bd: Option<&'a [f32]>,
    w3: &'a [f32],
    b3: Option<&'a [f32]>,
    c: usize,
    hidden: usize,
    c_out: usize,
    h: usize,
    w: usize,
    stride: usize,
    residual: bool,
}

/// Output rows `y0..y1` of [`conv_block`] for one image `x [c, h, w]` into `out` (the
/// image's output, `[c_out, ho, wo]`).
///
/// # Safety
/// Rows `y0..y1` of every channel of `out` are writable and aliased by no other reference.
#[macerator::with_simd]
#[allow(clippy::too_many_arguments)]
// `with_simd` needs the lifetime spelled out; `S` only selects the instruction set it
// compiles the body for.
#[allow(clippy::needless_lifetimes, clippy::extra_unused_type_parameters)]
unsafe fn conv_block_band<'a, S: macerator::Simd>(
    p: &ConvBlock<'a>,
    x: &[f32],
    y0: usize,
    y1: usize,
    ring: &mut [f32],
    mid: &mut [f32],
    packed: &mut Vec<f32>,
    acc: &mut Vec<f32>,
    out: *mut f32,
) {
    let (h, w, s, hidden) = (p.h, p.w, p.stride, p.hidden);
    let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
    let slot_len = hidden * w;
    let (mid, split) = mid.split_at_mut(hidden * wo);
    // Expansion row `r` (GELU'd) into ring slot `r % 3`, `[hidden, w]`.
    let expand = |ring: &mut [f32], packed: &mut Vec<f32>, acc: &mut Vec<f32>, r: usize| {
        let slot = &mut ring[(r % 3) * slot_len..(r % 3 + 1) * slot_len];
        // SAFETY: `slot` holds `hidden` rows of `w` values (stride `w`), this task's.
        unsafe {
            conv1x1_strips(
                p.w1,
                &x[r * w..],
                h * w,
                p.b1,
                None,
                w,
                p.c,
                hidden,
                slot.as_mut_ptr(),
                w,
                packed,
                acc,
                true,
            )
        };
    };
    // Expansion rows are computed in order, each once; the ring holds the last three.
    let mut next = (s * y0).saturating_sub(1);
    for y in y0..y1 {
        let last = (s * y + 1).min(h - 1);
        while next <= last {
            expand(ring, packed, acc, next);
            next += 1;
        }
        // Channel `ch` of expansion row `r`, if inside the image.
        let row_of = |r: Option<usize>, ch: usize| -> Option<(usize, usize)> {
            let r = r.filter(|&r| r < h)?;
            let base = (r % 3) * slot_len + ch * w;
            Some((base, base + w))
        };
        for ch in 0..hidden {
            let k: [f32; 9] = std::array::from_fn(|i| p.wd[ch * 9 + i]);
            let srcs = [(s * y).checked_sub(1), Some(s * y), Some(s * y + 1)]
                .map(|r| row_of(r, ch).map(|(a, b)| &ring[a..b]));
            let row = &mut mid[ch * wo..(ch + 1) * wo];
            let bias = p.bd.map_or(0.0, |b| b[ch]);
            if s == 1 {
                dw3x3_row_from(row, srcs, &k, bias);
            } else {
                dw3x3_row_from_s2(row, split, srcs, &k, bias);
            }
            gelu_body(row);
        }
        // SAFETY: row `y` of every channel of `out` (stride `ho * wo`), this task's.
        unsafe {
            conv1x1_strips(
                p.w3,
                mid,
                wo,
                p.b3,
                p.residual.then(|| &x[y * w..]),
                wo,
                hidden,
                p.c_out,
                out.add(y * wo),
                ho * wo,
                packed,
                acc,
                p.residual,
            )
        };
    }
}

/// TinyViT's window partition: tokens `x [B, H*W, C]` (row-major `H x W`), zero-padded at
/// the bottom and right to multiples of `ws`, cut into `ws x ws` windows ->
/// `[B * nH * nW, ws * ws, C]` (windows row-major, tokens row-major within each), as
/// upstream's `F.pad` and `view`/`transpose`. On the flex backend with f32 data, one pass
/// that copies each window's rows of tokens into place (burn-flex makes three: zeros,
/// `slice_assign`, the transposing copy); elsewhere Burn's operations.
pub fn window_partition(x: Tensor<3>, h: usize, w: usize, ws: usize) -> Tensor<3> {
    let [b, l, c] = x.dims();
    let ws = ws.max(1);
    let (ph, pw) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let (nh, nw) = (ph / ws, pw / ws);
    if l != h * w || !on_flex_f32(&x) {
        let x = x.reshape([b, h, w, c]);
        let x = if ph != h || pw != w {
            Tensor::<4>::zeros([b, ph, pw, c], &x.device())
                .slice_assign([0..b, 0..h, 0..w, 0..c], x)
        } else {
            x
        };
        return x
            .reshape([b * nh, ws, nw, ws * c])
            .swap_dims(1, 2)
            .reshape([b * nh * nw, ws * ws, c]);
    }
    let x = contiguous(x);
    let xs = values(&x);
    let windows = b * nh * nw;
    let win_len = ws * ws * c;
    let mut out = Output::new(windows * win_len);
    let out_ptr = out.ptr();
    par_tasks(windows, |t| {
        let (img, wy, wx) = (t / (nh * nw), (t / nw) % nh, t % nw);
        // SAFETY: window `t`'s block of `out`, written by this task alone.
        let dst = unsafe { out_ptr.zeroed(t * win_len, win_len) };
        // `x0 < w`: the padding is less than one window.
        let x0 = wx * ws;
        let cols = ws.min(w - x0) * c;
        for r in 0..ws.min(h.saturating_sub(wy * ws)) {
            let src = (img * l + (wy * ws + r) * w + x0) * c;
            dst[r * ws * c..r * ws * c + cols].copy_from_slice(&xs[src..src + cols]);
        }
    });
    // SAFETY: every window's block was written.
    from_values(unsafe { out.written() }, [windows, ws * ws, c])
}

/// The inverse of [`window_partition`] (padding dropped) added to the block's shortcut:
/// `windows [B * nH * nW, ws * ws, C]`, `shortcut [B, H*W, C]` ->
/// `shortcut + reverse(windows)`, `[B, H*W, C]`. On the flex backend with f32 data one
/// pass over the image rows (burn-flex: the transposing copy, the crop, the add);
/// elsewhere Burn's operations.
pub fn window_reverse_add(
    windows: Tensor<3>,
    shortcut: Tensor<3>,
    h: usize,
    w: usize,
    ws: usize,
) -> Tensor<3> {
    let [b, l, c] = shortcut.dims();
    let ws = ws.max(1);
    let (ph, pw) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let (nh, nw) = (ph / ws, pw / ws);
    let fits = l == h * w
        && windows.dims() == [b * nh * nw, ws * ws, c]
        && on_flex_f32(&windows)
        && on_flex_f32(&shortcut);
    if !fits {
        let x = windows
            .reshape([b * nh, nw, ws, ws * c])
            .swap_dims(1, 2)
            .reshape([b, ph, pw, c]);
        let x = if ph != h || pw != w {
            x.slice([0..b, 0..h, 0..w, 0..c])
        } else {
            x
        };
        return shortcut + x.reshape([b, l, c]);
    }
    let windows = contiguous(windows);
    let shortcut = contiguous(shortcut);
    let (a, sc) = (values(&windows), values(&shortcut));
    let row_len = w * c;
    let mut out = Output::new(b * l * c);
    let out_ptr = out.ptr();
    par_tasks(b * h, |t| {
        let (img, y) = (t / h, t % h);
        // SAFETY: image row `t` of `out`, written by this task alone.
        let dst = unsafe { out_ptr.zeroed(t * row_len, row_len) };
        let src = &sc[t * row_len..(t + 1) * row_len];
        let (wy, r) = (y / ws, y % ws);
        for wx in 0..nw {
            let x0 = wx * ws;
            let cols = ws.min(w - x0) * c;
            let win = (img * nh + wy) * nw + wx;
            let from = (win * ws + r) * ws * c;
            let parts = dst[x0 * c..x0 * c + cols]
                .iter_mut()
                .zip(&src[x0 * c..x0 * c + cols])
                .zip(&a[from..from + cols]);
            for ((d, &s), &v) in parts {
                *d = s + v;
            }
        }
    });
    // SAFETY: every image row was written.
    from_values(unsafe { out.written() }, [b, l, c])
}

/// A depthwise 3x3 convolution with stride 1 or 2 and zero padding 1 on channels-last
/// tokens, then exact GELU when `then_gelu`: `x [B, H*W, C] -> [B, H'*W', C]`, equal to
/// `conv` applied to `x` seen as `[B, C, H, W]` (TinyViT's local convolution between
/// attention and MLP, and the patch mergings' middle convolution). On the flex backend
/// with f32 data each output token is accumulated from its nine neighbours' channel
/// vectors, output rows split over the threads, with no layout change (burn-flex: a
/// transposing copy to `[B, C, H, W]`, the convolution, a copy back); elsewhere those
/// three steps.
pub fn depthwise_conv3x3_tokens(
    conv: &Conv2d,
    x: Tensor<3>,
    h: usize,
    w: usize,
    then_gelu: bool,
) -> Tensor<3> {
    let [b, l, c] = x.dims();
    let stride = conv.stride[0];
    let fits = is_depthwise_3x3(conv, c)
        && (conv.stride == [1, 1] || conv.stride == [2, 2])
        && l == h * w
        && w > 0
        && h > 0
        && on_flex_f32(&x)
        && conv_params_f32(conv);
    if !fits {
        return on_image(x, h, w, |x| depthwise_conv3x3(conv, x, then_gelu));
    }
    let x = contiguous(x);
    let (weight, bias) = conv_params(conv);
    let (xs, ws) = (values(&x), values(&weight));
    // Taps channels-last: `taps[tap * c + ch]`.
    let mut taps = vec![0.0f32; 9 * c];
    for ch in 0..c {
        for tap in 0..9 {
            taps[tap * c + ch] = ws[ch * 9 + tap];
        }
    }
    let bias = bias
        .as_ref()
        .map_or_else(|| vec![0.0; c], |b| values(b).to_vec());
    // Output side: (n + 2 - 3) / stride + 1.
    let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let row_len = wo * c;
    let mut out = Output::new(b * ho * row_len);
    let out_ptr = out.ptr();
    par_tasks_with(
        b * ho,
        || vec![0.0f32; row_len],
        |acc, t| {
            let (img, y) = (t / ho, t % ho);
            let image = &xs[img * l * c..(img + 1) * l * c];
            dw3x3_tokens_row(acc, image, &taps, &bias, y, h, w, c, stride, then_gelu);
            // SAFETY: output row `t` of `out`, written by this task alone.
            unsafe {
                std::ptr::copy_nonoverlapping(acc.as_ptr(), out_ptr.at(t * row_len), row_len)
            };
        },
    );
    // SAFETY: every output row was written.
    from_values(unsafe { out.written() }, [b, ho * wo, c])
}

/// Output row `y` of [`depthwise_conv3x3_tokens`] for one `h x w x c` image into `acc`
/// (`wo * c` values), GELU'd when `then_gelu`.
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
#[allow(clippy::too_many_arguments)]
fn dw3x3_tokens_row<S: macerator::Simd>(
    acc: &mut [f32],
    image: &[f32],
    taps: &[f32],
    bias: &[f32],
    y: usize,
    h: usize,
    w: usize,
    c: usize,
    stride: usize,
    then_gelu: bool,
) {
    let wo = acc.len() / c;
    for token in acc.chunks_mut(c) {
        token.copy_from_slice(bias);
    }
    for dy in 0..3 {
        let Some(iy) = (stride * y + dy).checked_sub(1).filter(|&iy| iy < h) else {
            continue;
        };
        let src_row = &image[iy * w * c..(iy + 1) * w * c];
        for dx in 0..3 {
            let tap = &taps[(dy * 3 + dx) * c..(dy * 3 + dx + 1) * c];
            // Output columns whose neighbour `stride * x + dx - 1` lies inside the row.
            let x_lo = usize::from(dx == 0);
            let x_hi = wo.min((w + 1 - dx).div_ceil(stride));
            for x in x_lo..x_hi {
                let ix = stride * x + dx - 1;
                let src = &src_row[ix * c..(ix + 1) * c];
                let dst = &mut acc[x * c..(x + 1) * c];
                for ((d, &k), &v) in dst.iter_mut().zip(tap).zip(src) {
                    *d += k * v;
                }
            }
        }
    }
    if then_gelu {
        gelu_body(acc);
    }
}

/// A 1x1 convolution (stride 1, no padding, one group) on channels-last tokens, then exact
/// GELU when `then_gelu`: `x [B, N, C_in] -> [B, N, C_out]`, equal to `conv` on `x` seen as
/// `[B, C_in, H, W]` for any `H x W = N` (TinyViT's patch-merging projections between
/// transformer stages, the neck's first convolution): the tokens times the transposed
/// weight, with no layout change, through [`linear`]'s product on the flex backend and
/// Burn's matmul elsewhere; quantized weights through [`conv1x1`] on `[B, C_in, 1, N]`.
pub fn conv1x1_tokens(conv: &Conv2d, x: Tensor<3>, then_gelu: bool) -> Tensor<3> {
    let [_, n, c_in] = x.dims();
    let c_out = conv.weight.dims()[0];
    let plain = is_plain_1x1(conv, c_in, c_out);
    let float_params = conv.weight.val().dtype() == DType::F32
        && conv
            .bias
            .as_ref()
            .is_none_or(|b| b.val().dtype() == DType::F32);
    if !plain || !float_params {
        return on_image(x, 1, n, |x| conv1x1(conv, x, None, then_gelu));
    }
    let weight = conv.weight.val().reshape([c_out, c_in]).swap_dims(0, 1);
    let bias = conv.bias.as_ref().map(|b| b.val());
    let (w, b) = (weight.clone(), bias.clone());
    product_with(x, weight, bias, None, then_gelu, move |x| {
        burn::tensor::module::linear(x, w, b)
    })
}

/// Multi-head attention within each window, TinyViT's: `qkv [W, N, heads * 3 * kd]` (per
/// head `[q | k | v]`, as the fused projection writes it), `bias [heads, N, N]` (the
/// relative-position biases, gathered) -> `[W, N, heads * kd]` (heads concatenated), i.e.
/// per window and head `softmax(q k^T * scale + bias) v`. On the flex backend with f32
/// data, one task per window and head (split over the threads) computes its `N x N`
/// scores with one product into a buffer that stays in cache, adds the bias and takes the
/// softmax there, and writes `P v` straight into its head's columns of the output:
/// burn-flex writes the scores of every window out and reads them back for the scale, the
/// bias, the softmax and the second product, then copies the heads into place. Elsewhere
/// Burn's operations, in the same order.
pub fn window_attention(qkv: Tensor<3>, bias: Tensor<3>, heads: usize, scale: f32) -> Tensor<3> {
    let [w, n, c3] = qkv.dims();
    let kd = c3 / (3 * heads.max(1));
    let fits = c3 == 3 * heads * kd
        && bias.dims() == [heads, n, n]
        && on_flex_f32(&qkv)
        && on_flex_f32(&bias);
    if !fits {
        // [W, N, heads, 3*kd] -> per head q, k, v, each [W, heads, N, kd].
        let qkv = qkv.reshape([w, n, heads, 3 * kd]);
        let q = qkv.clone().narrow(3, 0, kd).swap_dims(1, 2);
        let k = qkv.clone().narrow(3, kd, kd).swap_dims(1, 2);
        let v = qkv.narrow(3, 2 * kd, kd).swap_dims(1, 2);
        let attn = q.matmul(k.swap_dims(2, 3)) * scale + bias.unsqueeze::<4>();
        let attn = softmax(attn, 3);
        return attn.matmul(v).swap_dims(1, 2).reshape([w, n, heads * kd]);
    }
    let qkv = contiguous(qkv);
    let bias = contiguous(bias);
    let (xs, bs) = (values(&qkv), values(&bias));
    let c = heads * kd;
    let mut out = Output::new(w * n * c);
    let out_ptr = out.ptr();
    par_tasks_with(
        w * heads,
        || vec![0.0f32; n * n],
        |scores, t| {
            let (win, head) = (t / heads, t % heads);
            // Row i of q, k, v for this window and head: xs[base + i * c3 + {0, kd, 2kd} + d].
            let base = win * n * c3 + head * 3 * kd;
            let row = c3 as isize;
            // SAFETY: every pointer below stays inside its buffer: q/k/v address `n` rows
            // of `kd` values at stride `c3` of this window in `xs`; `scores` is `n x n`;
            // the output block is this (window, head)'s `n x kd` at stride `c` in `out`,
            // written by this task alone.
            unsafe {
                // scores = scale * q k^T: rhs[d, j] = k[j, d] (column stride c3, row stride 1).
                gemm::gemm(
                    n,
                    n,
                    kd,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    xs.as_ptr().add(base),
                    1,
                    row,
                    xs.as_ptr().add(base + kd),
                    row,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            let hb = &bs[head * n * n..(head + 1) * n * n];
            for (s, b) in scores.iter_mut().zip(hb) {
                *s += b;
            }
            softmax_rows(scores, n);
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    n,
                    kd,
                    n,
                    out_ptr.at(win * n * c + head * kd),
                    1,
                    c as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    xs.as_ptr().add(base + 2 * kd),
                    1,
                    row,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    // SAFETY: each (window, head) task's second product stored (not accumulated: no
    // read of the destination) its `n x kd` block; together they cover `out`.
    from_values(unsafe { out.written() }, [w, n, c])
}

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
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, None, false)
}

/// `gelu(layer.forward(x))` ([`linear`] with exact GELU applied to each block of rows
/// while it is in cache: no separate pass over the output).
pub fn linear_gelu<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, None, true)
}

/// `residual + layer.forward(x)` ([`linear`] with the residual added to each block of
/// rows while it is in cache), `residual` of the output's shape.
pub fn linear_add<const D: usize>(layer: &Linear, x: Tensor<D>, residual: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, Some(residual), false)
}

/// [`linear`] plus `residual`, then GELU when `then_gelu`; elsewhere Burn's operations.
fn linear_with<const D: usize>(
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
fn product_with<const D: usize>(
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
const LINEAR_MIN_ROWS: usize = 64;
/// Rows per task of [`linear`] (a multiple of the tile's 6).
const LINEAR_BLOCK_ROWS: usize = 96;
/// Rows of one register tile of [`linear`].
const TILE_ROWS: usize = 6;

/// f32 lanes of the widest vectors this CPU has.
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
fn lanes32<S: macerator::Simd>() -> usize {
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
unsafe fn linear_block<'a, S: macerator::Simd>(
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
unsafe fn linear_tile<S: macerator::Simd>(
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

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by `par_tasks` callers whose tasks write disjoint ranges.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `i` values further (a method, so closures capture the whole wrapper).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }

    /// `len` values from `i` on, zeroed, as a slice.
    ///
    /// # Safety
    /// `i..i + len` lies inside the buffer and no other reference to these values lives
    /// while the slice does.
    unsafe fn zeroed<'a>(self, i: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: the caller's promise.
        unsafe {
            std::ptr::write_bytes(self.at(i), 0, len);
            std::slice::from_raw_parts_mut(self.at(i), len)
        }
    }
}

/// A kernel's output of `len` values, allocated without being written: the kernel's tasks
/// each write (or zero, through [`SendPtr::zeroed`], right before they write) their own
/// part. `vec![0.0; len]` would zero all of it first in one single-threaded pass that
/// leaves nothing in cache for a stage-0 tensor (64 MiB): 4% of the encoder's samples.
struct Output {
    values: Vec<f32>,
    len: usize,
}

impl Output {
    fn new(len: usize) -> Self {
        Self {
            values: Vec::with_capacity(len),
            len,
        }
    }

    /// The buffer's start, for the tasks.
    fn ptr(&mut self) -> SendPtr {
        SendPtr(self.values.as_mut_ptr())
    }

    /// The values, once written.
    ///
    /// # Safety
    /// Every one of the `len` values has been written.
    unsafe fn written(mut self) -> Vec<f32> {
        // SAFETY: capacity `len` from `new`; initialised by the caller's promise.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

/// Runs `f(0..tasks)` over the CPU threads (tasks dealt round-robin; this thread takes its
/// share too).
fn par_tasks(tasks: usize, f: impl Fn(usize) + Sync) {
    par_tasks_with(tasks, || (), |_, t| f(t));
}

/// [`par_tasks`] with a scratch value per thread, made by `scratch` and lent to each of the
/// thread's tasks.
fn par_tasks_with<S>(
    tasks: usize,
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) {
    let parts = threads().min(tasks).max(1);
    let run = |part: usize| {
        let mut s = scratch();
        (part..tasks).step_by(parts).for_each(|t| f(&mut s, t));
    };
    if parts == 1 {
        run(0);
        return;
    }
    std::thread::scope(|s| {
        for part in 1..parts {
            let run = &run;
            s.spawn(move || run(part));
        }
        run(0);
    });
}

/// Whether the fast paths apply: f32 data on the flex backend.
fn on_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && matches!(x.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether a convolution's weight and bias are f32 flex tensors (quantized parameters go
/// to Burn).
fn conv_params_f32(conv: &Conv2d) -> bool {
    on_flex_f32(&conv.weight.val()) && conv.bias.as_ref().is_none_or(|b| on_flex_f32(&b.val()))
}

/// Whether `conv` is a 1x1 convolution `[c_out, c_in, 1, 1]` with stride 1, no dilation,
/// no padding and one group: a plain product over channels.
fn is_plain_1x1(conv: &Conv2d, c_in: usize, c_out: usize) -> bool {
    conv.kernel_size == [1, 1]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.weight.dims() == [c_out, c_in, 1, 1]
        && matches!(
            conv.padding,
            PaddingConfig2d::Explicit(0, 0, 0, 0) | PaddingConfig2d::Valid
        )
}

/// Whether `conv` is a depthwise 3x3 convolution on `c` channels with zero padding 1 and
/// no dilation (any stride: callers check the ones they take).
fn is_depthwise_3x3(conv: &Conv2d, c: usize) -> bool {
    conv.kernel_size == [3, 3]
        && conv.dilation == [1, 1]
        && conv.groups == c
        && conv.weight.dims() == [c, 1, 3, 3]
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
}

/// A convolution's weight and bias as contiguous flex tensors (after [`conv_params_f32`]).
fn conv_params(conv: &Conv2d) -> (FlexTensor, Option<FlexTensor>) {
    (
        contiguous(conv.weight.val()),
        conv.bias.as_ref().map(|b| contiguous(b.val())),
    )
}

/// `y (+ residual)`, then GELU when `then_gelu`: the fallbacks' epilogue with Burn's ops.
fn add_then_gelu<const D: usize>(
    y: Tensor<D>,
    residual: Option<Tensor<D>>,
    then_gelu: bool,
) -> Tensor<D> {
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    if then_gelu { gelu(y) } else { y }
}

/// `f` applied to tokens `x [B, H*W, C]` seen as an image `[B, C, H, W]`, its result
/// `[B, C', H', W']` turned back into tokens `[B, H'*W', C']` (the token paths' fallback).
fn on_image(x: Tensor<3>, h: usize, w: usize, f: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<3> {
    let [b, _, c] = x.dims();
    let y = f(x.swap_dims(1, 2).reshape([b, c, h, w]));
    let [b, c_out, h_out, w_out] = y.dims();
    y.reshape([b, c_out, h_out * w_out]).swap_dims(1, 2)
}

/// The flex primitive of a float tensor whose device was checked to be flex.
fn primitive<const D: usize>(t: Tensor<D>) -> FlexTensor {
    match t.try_into_primitive::<Flex>() {
        Ok(t) => t,
        // Unreachable: callers check the device (a model's parameters live on its device).
        Err(e) => panic!("flex tensor on a flex device: {e:?}"),
    }
}

/// [`primitive`], laid out contiguously (a copy only for a strided view).
fn contiguous<const D: usize>(t: Tensor<D>) -> FlexTensor {
    primitive(t).to_contiguous()
}

/// The values of a contiguous f32 flex tensor.
fn values(t: &FlexTensor) -> &[f32] {
    match t.as_slice::<f32>() {
        Some(v) => v,
        // Unreachable: callers pass contiguous tensors whose dtype they checked to be f32.
        None => panic!("contiguous f32 flex tensor expected"),
    }
}

/// A flex tensor of `shape` holding `values` row-major.
fn from_values<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    let t = FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    );
    Tensor::from_primitive::<Flex>(t)
}

/// One `h x w` plane `x` into `out`: each row accumulated in `row` by [`dw3x3_row`],
/// GELU'd there when `then_gelu`, then stored.
///
/// # Safety
/// `out` addresses `h * w` writable values no other reference aliases.
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3x3_plane<S: macerator::Simd>(
    row: &mut [f32],
    x: &[f32],
    k: &[f32; 9],
    bias: f32,
    h: usize,
    w: usize,
    then_gelu: bool,
    out: *mut f32,
) {
    for oh in 0..h {
        dw3x3_row(row, x, k, bias, oh, h, w);
        if then_gelu {
            gelu_body(row);
        }
        // SAFETY: row `oh` of the plane, inside `out` by the caller's promise.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(oh * w), w) };
    }
}

/// Output row `oh` of one `h x w` plane: `row = bias + sum over the 3x3 taps of k * x`
/// (zero padding 1).
#[inline(always)]
fn dw3x3_row(row: &mut [f32], x: &[f32], k: &[f32; 9], bias: f32, oh: usize, h: usize, w: usize) {
    let src = |kh: usize| {
        (oh + kh)
            .checked_sub(1)
            .filter(|&ih| ih < h)
            .map(|ih| &x[ih * w..(ih + 1) * w])
    };
    dw3x3_row_from(row, [src(0), src(1), src(2)], k, bias);
}

/// One output row of a depthwise 3x3 convolution (stride 1, zero padding 1) from the
/// input rows above, at and below it (`None` past the image's edge), each `row.len() >= 2`
/// values: `row = bias + sum over the taps of k * x`.
#[inline(always)]
fn dw3x3_row_from(row: &mut [f32], srcs: [Option<&[f32]>; 3], k: &[f32; 9], bias: f32) {
    let w = row.len();
    row.fill(bias);
    for (kh, src) in srcs.into_iter().enumerate() {
        let Some(src) = src else {
            continue;
        };
        let (k0, k1, k2) = (k[kh * 3], k[kh * 3 + 1], k[kh * 3 + 2]);
        row[0] += k1 * src[0] + k2 * src[1];
        let interior = row[1..w - 1]
            .iter_mut()
            .zip(src[..w - 2].iter().zip(&src[1..w - 1]).zip(&src[2..]));
        for (o, ((a, m), z)) in interior {
            *o += k0 * a + k1 * m + k2 * z;
        }
        row[w - 1] += k0 * src[w - 2] + k1 * src[w - 1];
    }
}

/// One output row (`row.len()` values) of a stride-2 depthwise 3x3 convolution (zero
/// padding 1) from the input rows above, at and below its centre (`None` past the image's
/// edge, each `w` values): `row[j] = bias + sum over the taps of k * x[2j - 1 + dx]`. Each
/// input row is split into its even and odd columns first (in `split`, `2 * w` values or
/// more) so that every tap is a contiguous pass: `x[2j - 1] = odd[j - 1]`, `x[2j] =
/// even[j]`, `x[2j + 1] = odd[j]`.
#[inline(always)]
fn dw3x3_row_from_s2(
    row: &mut [f32],
    split: &mut [f32],
    srcs: [Option<&[f32]>; 3],
    k: &[f32; 9],
    bias: f32,
) {
    row.fill(bias);
    for (kh, src) in srcs.into_iter().enumerate() {
        let Some(src) = src else {
            continue;
        };
        let (even, odd) = split.split_at_mut(src.len().div_ceil(2));
        let odd = &mut odd[..src.len() / 2];
        for (i, pair) in src.chunks(2).enumerate() {
            even[i] = pair[0];
            if let Some(&v) = pair.get(1) {
                odd[i] = v;
            }
        }
        let (k0, k1, k2) = (k[kh * 3], k[kh * 3 + 1], k[kh * 3 + 2]);
        for (a, &v) in row.iter_mut().zip(even.iter()) {
            *a += k1 * v;
        }
        for (a, &v) in row.iter_mut().zip(odd.iter()) {
            *a += k2 * v;
        }
        for (a, &v) in row[1..].iter_mut().zip(odd.iter()) {
            *a += k0 * v;
        }
    }
}

/// Applies `f` to the values of an f32 tensor, `unit` values (one row) at a time, rows
/// split over the threads: in place when the tensor owns its storage contiguously from
/// offset 0 (the usual case: a fresh op output), else into a new contiguous tensor.
fn map_f32(mut t: FlexTensor, unit: usize, f: impl Fn(&mut [f32]) + Sync) -> FlexTensor {
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

/// CPU threads for these kernels: `RAYON_NUM_THREADS` when set (the same count the flex
/// backend's rayon pool uses), else the platform's parallelism; 1 where threads cannot be
/// spawned (wasm32 without threads reports no parallelism).
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
    })
}

/// Runs `f` over `data` split into one contiguous part per thread, each a whole number of
/// `unit`-value items; this thread takes the first part.
fn par_split(data: &mut [f32], unit: usize, f: impl Fn(&mut [f32]) + Sync) {
    let items = data.len() / unit.max(1);
    let parts = threads().min(data.len() / MIN_PER_THREAD).min(items).max(1);
    if parts == 1 {
        f(data);
        return;
    }
    let per_part = items.div_ceil(parts) * unit;
    std::thread::scope(|s| {
        let mut chunks = data.chunks_mut(per_part);
        let first = chunks.next();
        for c in chunks {
            let f = &f;
            s.spawn(move || f(c));
        }
        if let Some(c) = first {
            f(c);
        }
    });
}

/// [`gelu_body`] for the widest vector instructions this CPU has (as [`softmax_rows`]).
#[macerator::with_simd]
// `S` only selects the instruction set macerator compiles the body for.
#[allow(clippy::extra_unused_type_parameters)]
fn gelu_slice<S: macerator::Simd>(values: &mut [f32]) {
    gelu_body(values)
}

#[inline(always)]
fn gelu_body(values: &mut [f32]) {
    for v in values {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` for f32 as a branch-free rational function, `x P(x²) / Q(x²)` on `x` clamped to
/// [-4, 4] (beyond which erf rounds to ±1 in f32). The coefficients are XLA's and Eigen's
/// (`ErfImpl32`, `generic_fast_erf_float`); NaN stays NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Max |a - b| over all values.
    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The fused MBConv equals Burn's convolutions and GELU in turn (two images and bands
    /// of rows per thread, a one-row image, an expansion wider than one K slice), and a
    /// middle convolution it cannot take (a full 3x3) goes to the unfused path.
    #[test]
    fn mbconv_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for ([b, c, h, w], hidden, groups) in [
            ([2, 8, 13, 10], 32, 32),
            ([1, 16, 1, 5], 64, 64),
            ([1, 64, 20, 40], 256, 256),
            ([1, 8, 9, 9], 16, 1),
        ] {
            let conv1 = Conv2dConfig::new([c, hidden], [1, 1]).init(&device);
            let dw = Conv2dConfig::new([hidden, hidden], [3, 3])
                .with_groups(groups)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let conv3 = Conv2dConfig::new([hidden, c], [1, 1]).init(&device);
            let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let y = activation::gelu(conv1.forward(x.clone()));
            let y = activation::gelu(dw.forward(y));
            let burn = activation::gelu(conv3.forward(y) + x.clone());
            let d = max_diff(mbconv(&conv1, &dw, &conv3, x), burn);
            assert!(d < 1e-4, "[{b}, {c}, {h}, {w}] x {hidden}: max |diff| {d}");
        }
    }

    /// The fused patch merging equals Burn's convolutions and GELU in turn (stride 2 on
    /// odd and even sides, stride 1, two images, a one-row image, more input channels
    /// than one K slice).
    #[test]
    fn patch_merging_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for ([b, c, h, w], out, stride) in [
            ([2, 8, 13, 10], 16, 2),
            ([1, 16, 8, 9], 24, 2),
            ([1, 16, 1, 5], 8, 2),
            ([1, 160, 12, 12], 320, 1),
            ([1, 64, 20, 18], 128, 2),
        ] {
            let conv1 = Conv2dConfig::new([c, out], [1, 1]).init(&device);
            let dw = Conv2dConfig::new([out, out], [3, 3])
                .with_groups(out)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let conv3 = Conv2dConfig::new([out, out], [1, 1]).init(&device);
            let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let y = activation::gelu(conv1.forward(x.clone()));
            let y = activation::gelu(dw.forward(y));
            let burn = conv3.forward(y);
            let ours = patch_merging(&conv1, &dw, &conv3, x);
            assert_eq!(ours.dims(), burn.dims());
            let d = max_diff(ours, burn);
            assert!(
                d < 1e-4,
                "[{b}, {c}, {h}, {w}] -> {out} / {stride}: max |diff| {d}"
            );
        }
    }

    /// Window partition and its inverse (plus the shortcut) equal Burn's reshapes, with and
    /// without padding, one and two images, on non-square token grids; the padded tokens
    /// are zeros.
    #[test]
    fn window_partition_and_reverse_match_burn() {
        use burn::tensor::Distribution;
        let device = Device::flex();
        let cases: [(usize, usize, usize, usize, usize); 3] =
            [(1, 9, 9, 7, 16), (2, 14, 14, 7, 8), (2, 5, 11, 4, 3)];
        for (b, h, w, ws, c) in cases {
            let x = Tensor::<3>::random([b, h * w, c], Distribution::Normal(0.0, 1.0), &device);
            let (ph, pw) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
            let (nh, nw) = (ph / ws, pw / ws);
            let padded = Tensor::<4>::zeros([b, ph, pw, c], &device)
                .slice_assign([0..b, 0..h, 0..w, 0..c], x.clone().reshape([b, h, w, c]));
            let burn = padded
                .reshape([b * nh, ws, nw, ws * c])
                .swap_dims(1, 2)
                .reshape([b * nh * nw, ws * ws, c]);
            let ours = window_partition(x.clone(), h, w, ws);
            assert_eq!(ours.dims(), burn.dims());
            assert_eq!(max_diff(ours, burn.clone()), 0.0, "partition {h}x{w}/{ws}");

            let shortcut =
                Tensor::<3>::random([b, h * w, c], Distribution::Normal(0.0, 1.0), &device);
            let windows = Tensor::<3>::random(burn.dims(), Distribution::Normal(0.0, 1.0), &device);
            let back = windows
                .clone()
                .reshape([b * nh, nw, ws, ws * c])
                .swap_dims(1, 2)
                .reshape([b, ph, pw, c])
                .slice([0..b, 0..h, 0..w, 0..c])
                .reshape([b, h * w, c]);
            let ours = window_reverse_add(windows, shortcut.clone(), h, w, ws);
            assert_eq!(max_diff(ours, shortcut + back), 0.0, "reverse {h}x{w}/{ws}");
        }
    }

    /// The channels-last depthwise convolution equals Burn's on `[B, C, H, W]` (with bias,
    /// non-square, widths 1 and 2 where the left and right taps fall outside; strides 1
    /// and 2, odd and even sides; with GELU).
    #[test]
    fn depthwise_conv3x3_tokens_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for stride in [1, 2] {
            for [b, c, h, w] in [[1, 8, 5, 1], [2, 16, 7, 2], [2, 32, 13, 17], [1, 16, 8, 10]] {
                let conv = Conv2dConfig::new([c, c], [3, 3])
                    .with_groups(c)
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(&device);
                let x = Tensor::<3>::random([b, h * w, c], Distribution::Normal(0.0, 1.0), &device);
                let y = conv.forward(x.clone().swap_dims(1, 2).reshape([b, c, h, w]));
                let [_, _, ho, wo] = y.dims();
                let burn = y.reshape([b, c, ho * wo]).swap_dims(1, 2);
                let ours = depthwise_conv3x3_tokens(&conv, x.clone(), h, w, false);
                assert_eq!(ours.dims(), burn.dims());
                let d = max_diff(ours, burn.clone());
                assert!(d < 1e-5, "[{b}, {c}, {h}, {w}] / {stride}: max |diff| {d}");
                let ours = depthwise_conv3x3_tokens(&conv, x, h, w, true);
                let d = max_diff(ours, activation::gelu(burn));
                assert!(
                    d < 1e-5,
                    "[{b}, {c}, {h}, {w}] / {stride}, GELU: max |diff| {d}"
                );
            }
        }
    }

    /// The 1x1 convolution on tokens equals Burn's on `[B, C, H, W]` (with and without
    /// bias and GELU; few tokens, where the product goes to Burn, and many).
    #[test]
    fn conv1x1_tokens_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for ([b, h, w], c_in, c_out, bias) in [
            ([1, 3, 4], 8, 5, true),
            ([2, 16, 13], 128, 160, true),
            ([1, 9, 9], 40, 33, false),
        ] {
            let conv = Conv2dConfig::new([c_in, c_out], [1, 1])
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<3>::random([b, h * w, c_in], Distribution::Normal(0.0, 1.0), &device);
            let burn = conv
                .forward(x.clone().swap_dims(1, 2).reshape([b, c_in, h, w]))
                .reshape([b, c_out, h * w])
                .swap_dims(1, 2);
            let d = max_diff(conv1x1_tokens(&conv, x.clone(), false), burn.clone());
            assert!(
                d < 1e-4,
                "[{b}, {h}x{w}, {c_in}] -> {c_out}: max |diff| {d}"
            );
            let d = max_diff(conv1x1_tokens(&conv, x, true), activation::gelu(burn));
            assert!(
                d < 1e-4,
                "[{b}, {h}x{w}, {c_in}] -> {c_out}, GELU: max |diff| {d}"
            );
        }
    }

    /// The rational erf against libm's `erf` in f64 over [-6, 6] and the special values.
    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f64;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let d = (erf(x) as f64 - libm::erf(x as f64)).abs();
            worst = worst.max(d);
        }
        println!("max |erf - libm erf| over [-6, 6]: {worst:e}");
        assert!(worst < 1e-6, "max |erf - libm erf| = {worst:e}");
        assert!((erf(f32::INFINITY) - 1.0).abs() <= 2e-7);
        assert!((erf(f32::NEG_INFINITY) + 1.0).abs() <= 2e-7);
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
    }

    /// The polynomial exp against f64 over the softmax range and beyond.
    #[test]
    fn exp_matches_f64() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        println!("max relative |exp - f64 exp| over [-87, 88]: {worst:e}");
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::INFINITY).is_finite() && exp(f32::NAN).is_nan());
    }

    /// The fused softmax equals Burn's on the last axis (fresh, shared and transposed
    /// inputs, rows with large and equal values), and other axes go to Burn.
    #[test]
    fn softmax_matches_burn() {
        use burn::tensor::Distribution;
        let device = Device::flex();
        let x = Tensor::<4>::random([3, 5, 49, 49], Distribution::Normal(0.0, 4.0), &device);
        let reference = activation::softmax(x.clone(), 3);
        assert!(max_diff(softmax(x.clone() * 1.0, 3), reference.clone()) < 1e-6);
        assert!(max_diff(softmax(x.clone(), 3), reference.clone()) < 1e-6);
        let t = x.clone().swap_dims(2, 3);
        assert!(max_diff(softmax(t.clone(), 3), activation::softmax(t, 3)) < 1e-6);
        assert!(max_diff(softmax(x.clone(), 2), activation::softmax(x, 2)) < 1e-6);
        let flat = Tensor::<2>::from_data(
            TensorData::new(vec![1e30f32, 1e30, 0.0, -1e30], [1, 4]),
            &device,
        );
        let got = softmax(flat, 1).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got, vec![0.5, 0.5, 0.0, 0.0]);
    }

    /// The fused window attention equals Burn's operations (windows of 7x7 and 14x14 as in
    /// TinyViT, and a tiny odd one).
    #[test]
    fn window_attention_matches_burn() {
        use burn::tensor::Distribution;
        let device = Device::flex();
        for (w, n, heads, kd) in [(3, 49, 4, 8), (2, 5, 3, 4), (1, 196, 5, 32)] {
            let qkv = Tensor::<3>::random(
                [w, n, heads * 3 * kd],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let bias = Tensor::<3>::random([heads, n, n], Distribution::Normal(0.0, 1.0), &device);
            let scale = (kd as f32).powf(-0.5);
            // Burn's own operations (the other devices' path), written out.
            let x = qkv.clone().reshape([w, n, heads, 3 * kd]);
            let q = x.clone().narrow(3, 0, kd).swap_dims(1, 2);
            let k = x.clone().narrow(3, kd, kd).swap_dims(1, 2);
            let v = x.narrow(3, 2 * kd, kd).swap_dims(1, 2);
            let p = activation::softmax(
                q.matmul(k.swap_dims(2, 3)) * scale + bias.clone().unsqueeze::<4>(),
                3,
            );
            let burn = p.matmul(v).swap_dims(1, 2).reshape([w, n, heads * kd]);
            let ours = window_attention(qkv, bias, heads, scale);
            assert_eq!(ours.dims(), [w, n, heads * kd]);
            let d = max_diff(ours, burn);
            assert!(
                d < 1e-5,
                "[{w}, {n}] x {heads} heads of {kd}: max |diff| {d}"
            );
        }
    }

    /// The linear fast path equals Burn's `Linear` (with and without bias, row counts
    /// that are not multiples of the tile or block, widths that are not multiples of the
    /// panel, K longer than one slice, a 3-d input; alone, with GELU, with a residual), and
    /// leaves few rows to Burn. (On a
    /// CPU with 128-bit vectors only, both sides are Burn's.)
    #[test]
    fn linear_matches_burn() {
        use burn::nn::LinearConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for (rows, k, n, bias) in [
            (97, 128, 384, true),
            (200, 640, 160, true),
            (64, 7, 5, false),
            (1000, 320, 33, true),
        ] {
            let layer = LinearConfig::new(k, n).with_bias(bias).init(&device);
            let x = Tensor::<3>::random([2, rows, k], Distribution::Normal(0.0, 1.0), &device);
            let burn = layer.forward(x.clone());
            let d = max_diff(linear(&layer, x.clone()), burn.clone());
            assert!(d < 1e-4, "[2, {rows}, {k}] x [{k}, {n}]: max |diff| {d}");
            // GELU (applied after the last K slice) and the residual (added once).
            let d = max_diff(
                linear_gelu(&layer, x.clone()),
                activation::gelu(burn.clone()),
            );
            assert!(
                d < 1e-4,
                "[2, {rows}, {k}] x [{k}, {n}], GELU: max |diff| {d}"
            );
            let r = Tensor::<3>::random([2, rows, n], Distribution::Normal(0.0, 1.0), &device);
            let d = max_diff(linear_add(&layer, x, r.clone()), burn + r);
            assert!(
                d < 1e-4,
                "[2, {rows}, {k}] x [{k}, {n}] + residual: max |diff| {d}"
            );
        }
        let layer = LinearConfig::new(8, 4).init(&device);
        let x = Tensor::<2>::random([3, 8], Distribution::Normal(0.0, 1.0), &device);
        let d = max_diff(linear(&layer, x.clone()), layer.forward(x));
        assert_eq!(d, 0.0);
    }

    /// The 1x1 fast path equals Burn's convolution (plus the residual), and leaves other
    /// convolutions to Burn.
    #[test]
    fn conv1x1_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        // Odd pixel counts (blocks and strips not whole vectors), a batch of two, no-bias,
        // the neck's shape class, more input channels than one K slice holds; with and
        // without a residual and GELU.
        for ([b, ci, h, w], co, bias) in [
            ([1, 8, 5, 3], 4, true),
            ([2, 16, 33, 47], 24, true),
            ([1, 64, 64, 64], 256, true),
            ([1, 40, 16, 16], 32, false),
            ([1, 300, 9, 37], 64, true),
        ] {
            let conv = Conv2dConfig::new([ci, co], [1, 1])
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([b, ci, h, w], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<4>::random([b, co, h, w], Distribution::Normal(0.0, 1.0), &device);
            let burn = conv.forward(x.clone());
            let d = max_diff(conv1x1(&conv, x.clone(), None, false), burn.clone());
            assert!(d < 1e-4, "[{b}, {ci}, {h}, {w}] -> {co}: max |diff| {d}");
            let d = max_diff(
                conv1x1(&conv, x.clone(), Some(r.clone()), false),
                burn.clone() + r.clone(),
            );
            assert!(
                d < 1e-4,
                "[{b}, {ci}, {h}, {w}] -> {co} + residual: max |diff| {d}"
            );
            let d = max_diff(
                conv1x1(&conv, x, Some(r.clone()), true),
                activation::gelu(burn + r),
            );
            assert!(
                d < 1e-4,
                "[{b}, {ci}, {h}, {w}] -> {co} + residual, GELU: max |diff| {d}"
            );
        }
        // Quantized weights: Burn's own path (no panic).
        let mut conv = Conv2dConfig::new([8, 4], [1, 1]).init(&device);
        let scheme = burn::tensor::quantization::QuantScheme::default();
        conv.weight = conv.weight.map(|w| w.quantize_dynamic(&scheme));
        let x = Tensor::<4>::random([1, 8, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<4>::random([1, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let d = max_diff(
            conv1x1(&conv, x.clone(), Some(r.clone()), false),
            conv.forward(x) + r,
        );
        assert_eq!(d, 0.0);
        // A 3x3 convolution: Burn's own path (same output as Burn).
        let conv = Conv2dConfig::new([4, 6], [3, 3]).init(&device);
        let x = Tensor::<4>::random([1, 4, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let d = max_diff(conv1x1(&conv, x.clone(), None, false), conv.forward(x));
        assert_eq!(d, 0.0);
    }

    /// The depthwise fast path equals Burn's convolution (with bias, on sizes with one
    /// and several planes per thread, non-square), and leaves other convolutions to Burn.
    #[test]
    fn depthwise_conv3x3_matches_burn() {
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        for [b, c, h, w] in [[1, 8, 5, 2], [2, 16, 33, 47], [1, 64, 64, 64]] {
            let conv = Conv2dConfig::new([c, c], [3, 3])
                .with_groups(c)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let ours = depthwise_conv3x3(&conv, x.clone(), false);
            let burn = conv.forward(x.clone());
            let d = max_diff(ours, burn.clone());
            assert!(d < 1e-5, "[{b}, {c}, {h}, {w}]: max |diff| {d}");
            // With GELU fused: Burn's convolution then Burn's exact GELU.
            let ours = depthwise_conv3x3(&conv, x, true);
            let d = max_diff(ours, activation::gelu(burn));
            assert!(d < 1e-5, "[{b}, {c}, {h}, {w}] + GELU: max |diff| {d}");
        }
        // Stride 2: Burn's own path (same output shape as Burn).
        let conv = Conv2dConfig::new([8, 8], [3, 3])
            .with_groups(8)
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let x = Tensor::<4>::random([1, 8, 9, 9], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(depthwise_conv3x3(&conv, x, true).dims(), [1, 8, 5, 5]);
    }

    /// The flex path equals Burn's own GELU on every layout it meets: a fresh (unique,
    /// contiguous) tensor, a shared one (must not be changed under its other owner), a
    /// transposed view, a large one split over threads.
    #[test]
    fn gelu_matches_burn_on_flex() {
        let device = Device::flex();
        let values: Vec<f32> = (0..300_000u64)
            .map(|i| ((i * 7919) % 20_011) as f32 * 1e-3 - 10.0)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [600, 500]), &device);
        let max_diff = |a: Tensor<2>, b: Tensor<2>| {
            let a = a.into_data().try_to_vec::<f32>().unwrap();
            let b = b.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(&b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let reference = activation::gelu(x.clone());

        // Shared: `x` keeps its values.
        let shared = gelu(x.clone());
        assert!(max_diff(shared, reference.clone()) < 1e-5);
        assert_eq!(x.clone().into_data().try_to_vec::<f32>().unwrap(), values);

        // Unique and contiguous (in place), large enough to be split over threads.
        let fresh = gelu(x.clone() * 1.0);
        assert!(max_diff(fresh, reference.clone()) < 1e-5);

        // A transposed view.
        let t = gelu(x.clone().transpose());
        assert!(max_diff(t, reference.clone().transpose()) < 1e-5);

        // A narrowed view (offset into its storage).
        let s = gelu(x.clone().slice([100..200, 10..400]));
        assert!(max_diff(s, reference.slice([100..200, 10..400])) < 1e-5);
    }
}
