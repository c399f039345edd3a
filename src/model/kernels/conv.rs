//! Convolutions on the flex backend: 1x1 as register-tiled products and depthwise 3x3
//! (image and token layouts), with the row kernels that `fused` (stage 0's MBConv and
//! patch merging, row by row) builds on.

use burn::backend::flex::FlexTensor;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};

use super::activation::*;
use super::flex::*;
use super::linear::*;
use super::parallel::*;

/// A depthwise 3x3 convolution with stride 1 and zero padding 1 (TinyViT's, where the fused
/// and token-layout paths do not apply), `x [B, C, H, W] -> [B, C, H, W]` with
/// `conv.weight [C, 1, 3, 3]`,
/// followed by exact GELU when `then_gelu`. burn-flex 0.22.1 takes 117 ms for the first
/// stage's `[1, 256, 256, 256]` on 2 cores; here each output row is accumulated in a
/// scratch row (in L1) from three input rows in one vectorisable pass per kernel row,
/// GELU'd there when asked (saving the separate pass over the tensor), and stored once,
/// runs of planes split over the threads. Any other convolution, device or dtype goes to
/// `conv.forward` (and [`gelu`]).
pub(crate) fn depthwise_conv3x3(conv: &Conv2d, x: Tensor<4>, then_gelu: bool) -> Tensor<4> {
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
pub(crate) fn conv1x1(
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
pub(super) const CONV_STRIPS: usize = 8;

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
pub(super) unsafe fn conv1x1_strips<'a, S: macerator::Simd>(
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

/// A depthwise 3x3 convolution with stride 1 or 2 and zero padding 1 on channels-last
/// tokens, then exact GELU when `then_gelu`: `x [B, H*W, C] -> [B, H'*W', C]`, equal to
/// `conv` applied to `x` seen as `[B, C, H, W]` (TinyViT's local convolution between
/// attention and MLP, and the patch mergings' middle convolution). On the flex backend
/// with f32 data each output token is accumulated from its nine neighbours' channel
/// vectors, output rows split over the threads, with no layout change (burn-flex: a
/// transposing copy to `[B, C, H, W]`, the convolution, a copy back); elsewhere those
/// three steps.
pub(crate) fn depthwise_conv3x3_tokens(
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
pub(super) fn dw3x3_tokens_row<S: macerator::Simd>(
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
pub(crate) fn conv1x1_tokens(conv: &Conv2d, x: Tensor<3>, then_gelu: bool) -> Tensor<3> {
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

/// Whether a convolution's weight and bias are f32 flex tensors (quantized parameters go
/// to Burn).
pub(super) fn conv_params_f32(conv: &Conv2d) -> bool {
    on_flex_f32(&conv.weight.val()) && conv.bias.as_ref().is_none_or(|b| on_flex_f32(&b.val()))
}

/// Whether `conv` is a 1x1 convolution `[c_out, c_in, 1, 1]` with stride 1, no dilation,
/// no padding and one group: a plain product over channels.
pub(super) fn is_plain_1x1(conv: &Conv2d, c_in: usize, c_out: usize) -> bool {
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
pub(super) fn is_depthwise_3x3(conv: &Conv2d, c: usize) -> bool {
    conv.kernel_size == [3, 3]
        && conv.dilation == [1, 1]
        && conv.groups == c
        && conv.weight.dims() == [c, 1, 3, 3]
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
}

/// A convolution's weight and bias as contiguous flex tensors (after [`conv_params_f32`]).
pub(super) fn conv_params(conv: &Conv2d) -> (FlexTensor, Option<FlexTensor>) {
    (
        contiguous(conv.weight.val()),
        conv.bias.as_ref().map(|b| contiguous(b.val())),
    )
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
pub(super) unsafe fn dw3x3_plane<S: macerator::Simd>(
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
pub(super) fn dw3x3_row(
    row: &mut [f32],
    x: &[f32],
    k: &[f32; 9],
    bias: f32,
    oh: usize,
    h: usize,
    w: usize,
) {
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
pub(super) fn dw3x3_row_from(row: &mut [f32], srcs: [Option<&[f32]>; 3], k: &[f32; 9], bias: f32) {
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
pub(super) fn dw3x3_row_from_s2(
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
