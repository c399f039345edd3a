//! Stage 0's MBConv and patch merging fused row by row on the flex backend, from the
//! row kernels of `conv` (the arithmetic of its 1x1 and depthwise 3x3, in the same order).

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::activation::*;
use super::conv::*;
use super::flex::*;
use super::linear::*;
use super::parallel::*;

/// TinyViT's MBConv, `gelu(conv3(gelu(dw(gelu(conv1(x))))) + x)`, with `conv1` a 1x1
/// expansion `[C, C_h]`, `dw` a depthwise 3x3 (stride 1, padding 1) on `C_h` channels and
/// `conv3` a 1x1 projection back to `C`: `x [B, C, H, W] -> [B, C, H, W]`. On the flex
/// backend with f32 data and vectors of 8 or more f32 lanes, row by row through cache:
/// each thread takes a band of image rows and keeps the expansion's last three rows
/// (`3 x C_h x W`) in a ring, so that every output row is the depthwise convolution of
/// three cached rows followed by the projection; the two `C_h`-channel intermediates
/// (64 MiB each in stage 0) are never written out. The arithmetic is that of
/// [`conv1x1`] and [`depthwise_conv3x3`], in the same order. Elsewhere those two in turn.
pub(crate) fn mbconv(conv1: &Conv2d, dw: &Conv2d, conv3: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv_block(conv1, dw, conv3, x, true)
}

/// TinyViT's patch merging out of stage 0, `conv3(gelu(dw(gelu(conv1(x)))))` with a
/// stride-2 (or 1) depthwise `dw`: `x [B, C, H, W] -> [B, C_out, H', W']`, fused row by row
/// as [`mbconv`] (no shortcut).
pub(crate) fn patch_merging(
    conv1: &Conv2d,
    dw: &Conv2d,
    conv3: &Conv2d,
    x: Tensor<4>,
) -> Tensor<4> {
    conv_block(conv1, dw, conv3, x, false)
}

/// [`mbconv`] (`residual`: shortcut added and GELU last, `dw` stride 1) or
/// [`patch_merging`].
pub(super) fn conv_block(
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
pub(super) struct ConvBlock<'a> {
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
pub(super) unsafe fn conv_block_band<'a, S: macerator::Simd>(
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
