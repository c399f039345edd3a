//! TinyViT's windows: partition with padding, reverse plus shortcut, and the attention
//! fused per window and head.

use burn::tensor::Tensor;

use super::activation::*;
use super::flex::*;
use super::parallel::*;

/// TinyViT's window partition: tokens `x [B, H*W, C]` (row-major `H x W`), zero-padded at
/// the bottom and right to multiples of `ws`, cut into `ws x ws` windows ->
/// `[B * nH * nW, ws * ws, C]` (windows row-major, tokens row-major within each), as
/// upstream's `F.pad` and `view`/`transpose`. On the flex backend with f32 data, one pass
/// that copies each window's rows of tokens into place (burn-flex makes three: zeros,
/// `slice_assign`, the transposing copy); elsewhere Burn's operations.
pub(crate) fn window_partition(x: Tensor<3>, h: usize, w: usize, ws: usize) -> Tensor<3> {
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
pub(crate) fn window_reverse_add(
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
pub(crate) fn window_attention(
    qkv: Tensor<3>,
    bias: Tensor<3>,
    heads: usize,
    scale: f32,
) -> Tensor<3> {
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
