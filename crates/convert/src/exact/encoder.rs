//! TinyViT (LiteMedSAM's image encoder) in the fixed order of [`super::ops`], channels
//! last throughout. Mirrors [`medfm::model::tiny_vit`] (upstream `tiny_vit_sam.py`) stage
//! by stage; the hyper-parameters are read from [`TinyVitConfig`].
//!
//! Stage 0 (the stem and the MBConvs, never quantized) runs one image at a time
//! ([`stem`]); stages 1-3 and the neck take the whole batch layer by layer ([`stages`]),
//! so that an [`Observer`] sees each biased layer's outputs over every calibration image
//! before the next layer runs (what sequential bias correction needs).

use super::ops::{self, Product, depthwise3x3, gelu, layer_norm, matmul, softmax_rows};
use super::{Observer, Params};
use medfm::model::Error;
use medfm::model::tiny_vit::TinyVitConfig;

/// LayerNorm epsilon of TinyViT's attention and MLP norms (PyTorch's default).
const LN_EPS: f32 = 1e-5;
/// LayerNorm2d epsilon of the neck.
const LN2D_EPS: f32 = 1e-6;

/// A 1x1 convolution (weight `[out, in, 1, 1]`) as a product `[in, out]`, and its bias.
fn conv1x1<'a>(
    p: &'a Params,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    bias: bool,
) -> Result<(Vec<f32>, Option<&'a [f32]>), Error> {
    let w = p.values(&format!("{prefix}.weight"), &[c_out, c_in, 1, 1])?;
    let b = if bias {
        Some(p.values(&format!("{prefix}.bias"), &[c_out])?)
    } else {
        None
    };
    Ok((ops::transpose(w, c_out, c_in), b))
}

/// A depthwise 3x3 convolution's weight `[c, 1, 3, 3]` and bias.
fn depthwise<'a>(p: &'a Params, prefix: &str, c: usize) -> Result<(&'a [f32], &'a [f32]), Error> {
    Ok((
        p.values(&format!("{prefix}.weight"), &[c, 1, 3, 3])?,
        p.values(&format!("{prefix}.bias"), &[c])?,
    ))
}

/// A Linear layer's weight `[k, n]` and bias.
fn linear<'a>(
    p: &'a Params,
    prefix: &str,
    k: usize,
    n: usize,
) -> Result<(&'a [f32], &'a [f32]), Error> {
    Ok((
        p.values(&format!("{prefix}.weight"), &[k, n])?,
        p.values(&format!("{prefix}.bias"), &[n])?,
    ))
}

/// A LayerNorm's `gamma`, `beta`.
fn norm<'a>(p: &'a Params, prefix: &str, c: usize) -> Result<(&'a [f32], &'a [f32]), Error> {
    Ok((
        p.values(&format!("{prefix}.gamma"), &[c])?,
        p.values(&format!("{prefix}.beta"), &[c])?,
    ))
}

/// Stage 0 of one image: `image [3, S, S]` (channel-major, as `pipeline::preprocess`
/// gives it) -> tokens `[(S/2)^2, C1]` (row-major pixels, channels last): the patch
/// embedding's two 1x1 convolutions with GELU between, the MBConvs, the patch merging.
pub fn stem(p: &Params, image: &[f32]) -> Result<Vec<f32>, Error> {
    let cfg = TinyVitConfig::new();
    let (s, c_in, d) = (cfg.img_size, cfg.in_chans, cfg.embed_dims);
    if image.len() != c_in * s * s {
        return Err(Error::Input {
            tensor: "image",
            problem: format!(
                "the encoder takes [{c_in}, {s}, {s}] images, got {} values",
                image.len()
            ),
        });
    }
    let px = s * s;
    let x = ops::transpose(image, c_in, px); // [S*S, 3]
    // Patch embedding: 1x1 (3 -> C0/2), GELU, 1x1 (-> C0).
    let (w, b) = conv1x1(p, "image_encoder.patch_embed.conv1.c", c_in, d[0] / 2, true)?;
    let mut x = matmul(&x, px, c_in, &w, d[0] / 2, b);
    gelu(&mut x);
    let (w, b) = conv1x1(p, "image_encoder.patch_embed.conv2.c", d[0] / 2, d[0], true)?;
    let mut x = matmul(&x, px, d[0] / 2, &w, d[0], b);
    // MBConvs: gelu(conv3(gelu(dw(gelu(conv1(x))))) + x).
    let hidden = d[0] * cfg.mbconv_expand_ratio;
    for i in 0..cfg.depths[0] {
        let pre = format!("image_encoder.layer0.blocks.{i}");
        let (w1, b1) = conv1x1(p, &format!("{pre}.conv1.c"), d[0], hidden, true)?;
        let (wd, bd) = depthwise(p, &format!("{pre}.conv2.c"), hidden)?;
        let (w3, b3) = conv1x1(p, &format!("{pre}.conv3.c"), hidden, d[0], true)?;
        let mut y = matmul(&x, px, d[0], &w1, hidden, b1);
        gelu(&mut y);
        let mut y = depthwise3x3(&y, s, s, hidden, wd, bd, 1);
        gelu(&mut y);
        let mut y = matmul(&y, px, hidden, &w3, d[0], b3);
        for (y, &x) in y.iter_mut().zip(&x) {
            *y += x;
        }
        gelu(&mut y);
        x = y;
    }
    // Patch merging into stage 1: 1x1, GELU, depthwise 3x3 stride 2, GELU, 1x1.
    let pre = "image_encoder.layer0.downsample";
    let (w1, b1) = conv1x1(p, &format!("{pre}.conv1.c"), d[0], d[1], true)?;
    let (wd, bd) = depthwise(p, &format!("{pre}.conv2.c"), d[1])?;
    let (w3, b3) = conv1x1(p, &format!("{pre}.conv3.c"), d[1], d[1], true)?;
    let mut y = matmul(&x, px, d[0], &w1, d[1], b1);
    gelu(&mut y);
    let mut y = depthwise3x3(&y, s, s, d[1], wd, bd, 2);
    gelu(&mut y);
    let side = (s - 1) / 2 + 1;
    Ok(matmul(&y, side * side, d[1], &w3, d[1], b3))
}

/// Tokens of a batch of images: `[images * side * side, c]`, image after image.
struct Batch {
    images: usize,
    side: usize,
    c: usize,
    x: Vec<f32>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.images * self.side * self.side
    }
}

/// Stages 1-3 over the batch `stems` (each [`stem`]'s output), then the neck when
/// `with_neck`: image embeddings `[256, 64, 64]` (channel-major, as the Burn model's),
/// one per image; `None` without the neck.
pub fn stages(
    p: &Params,
    stems: &[Vec<f32>],
    obs: &mut dyn Observer,
    with_neck: bool,
) -> Result<Option<Vec<Vec<f32>>>, Error> {
    let cfg = TinyVitConfig::new();
    let d = cfg.embed_dims;
    let side = cfg.img_size / 2;
    let mut x = Vec::with_capacity(stems.len() * side * side * d[1]);
    for s in stems {
        if s.len() != side * side * d[1] {
            return Err(Error::Input {
                tensor: "tokens",
                problem: format!(
                    "stage 1 takes [{}, {}] tokens per image, got {} values",
                    side * side,
                    d[1],
                    s.len()
                ),
            });
        }
        x.extend_from_slice(s);
    }
    let mut batch = Batch {
        images: stems.len(),
        side,
        c: d[1],
        x,
    };
    for stage in 1..4 {
        let pre = format!("image_encoder.layer{stage}");
        for i in 0..cfg.depths[stage] {
            block(
                p,
                &format!("{pre}.blocks.{i}"),
                &mut batch,
                cfg.num_heads[stage],
                cfg.window_sizes[stage],
                cfg.mlp_ratio,
                obs,
            )?;
        }
        if stage < 3 {
            merge(
                p,
                &format!("{pre}.downsample"),
                &mut batch,
                d[stage + 1],
                obs,
            )?;
        }
    }
    if !with_neck {
        return Ok(None);
    }
    let rows = batch.side * batch.side;
    let per_image = rows * batch.c;
    (0..batch.images)
        .map(|i| {
            neck(
                p,
                &batch.x[i * per_image..(i + 1) * per_image],
                batch.side,
                batch.c,
                cfg.neck_dim,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One TinyViT block on the batch: windowed attention plus shortcut, the depthwise local
/// convolution, MLP plus shortcut.
fn block(
    p: &Params,
    pre: &str,
    b: &mut Batch,
    heads: usize,
    ws: usize,
    mlp_ratio: usize,
    obs: &mut dyn Observer,
) -> Result<(), Error> {
    let c = b.c;
    // Attention on zero-padded windows (the padding tokens pass the norm and the
    // projections too, as upstream's F.pad before the attention).
    let mut win = partition(b, ws);
    let rows = win.len() / c;
    let (g, be) = norm(p, &format!("{pre}.attn.norm"), c)?;
    layer_norm(&mut win, c, g, Some(be), LN_EPS);
    let (w, bias) = linear(p, &format!("{pre}.attn.qkv"), c, 3 * c)?;
    let mut qkv = matmul(&win, rows, c, w, 3 * c, Some(bias));
    obs.encoder_output(&format!("{pre}.attn.qkv"), &mut qkv, 3 * c)?;
    let n = ws * ws;
    let ab = p.values(&format!("{pre}.attn.attention_biases"), &[heads, n])?;
    let att = window_attention(&qkv, rows / n, n, heads, c / heads, ws, ab);
    let (w, bias) = linear(p, &format!("{pre}.attn.proj"), c, c)?;
    let mut out = matmul(&att, rows, c, w, c, Some(bias));
    obs.encoder_output(&format!("{pre}.attn.proj"), &mut out, c)?;
    reverse_add(b, &out, ws);
    // Local convolution (no activation), per image.
    let (wd, bd) = depthwise(p, &format!("{pre}.local_conv.c"), c)?;
    let per_image = b.side * b.side * c;
    let mut x = Vec::with_capacity(b.x.len());
    for img in b.x.chunks_exact(per_image) {
        x.extend(depthwise3x3(img, b.side, b.side, c, wd, bd, 1));
    }
    // MLP: x + fc2(gelu(fc1(norm(x)))).
    let hidden = c * mlp_ratio;
    let mut t = x.clone();
    let (g, be) = norm(p, &format!("{pre}.mlp.norm"), c)?;
    layer_norm(&mut t, c, g, Some(be), LN_EPS);
    let (w, bias) = linear(p, &format!("{pre}.mlp.fc1"), c, hidden)?;
    let mut h = matmul(&t, b.rows(), c, w, hidden, Some(bias));
    obs.encoder_output(&format!("{pre}.mlp.fc1"), &mut h, hidden)?;
    gelu(&mut h);
    let (w, bias) = linear(p, &format!("{pre}.mlp.fc2"), hidden, c)?;
    let mut out = matmul(&h, b.rows(), hidden, w, c, Some(bias));
    obs.encoder_output(&format!("{pre}.mlp.fc2"), &mut out, c)?;
    for (o, &x) in out.iter_mut().zip(&x) {
        *o += x;
    }
    b.x = out;
    Ok(())
}

/// The batch's tokens cut into `ws x ws` windows, zero-padded at the bottom and right:
/// `[images * nW * nW * ws * ws, c]`, windows row-major per image, tokens row-major.
fn partition(b: &Batch, ws: usize) -> Vec<f32> {
    let (r, c) = (b.side, b.c);
    let nw = r.div_ceil(ws);
    let mut out = vec![0.0f32; b.images * nw * nw * ws * ws * c];
    for img in 0..b.images {
        for wy in 0..nw {
            for wx in 0..nw {
                let win = (img * nw + wy) * nw + wx;
                for ty in 0..ws {
                    let y = wy * ws + ty;
                    if y >= r {
                        break;
                    }
                    let x0 = wx * ws;
                    let cols = ws.min(r - x0);
                    let src = ((img * r + y) * r + x0) * c;
                    let dst = (win * ws * ws + ty * ws) * c;
                    out[dst..dst + cols * c].copy_from_slice(&b.x[src..src + cols * c]);
                }
            }
        }
    }
    out
}

/// `b.x += windows` put back in place (padding dropped).
fn reverse_add(b: &mut Batch, windows: &[f32], ws: usize) {
    let (r, c) = (b.side, b.c);
    let nw = r.div_ceil(ws);
    for img in 0..b.images {
        for y in 0..r {
            for x in 0..r {
                let win = (img * nw + y / ws) * nw + x / ws;
                let src = (win * ws * ws + (y % ws) * ws + x % ws) * c;
                let dst = ((img * r + y) * r + x) * c;
                for (d, &v) in b.x[dst..dst + c].iter_mut().zip(&windows[src..src + c]) {
                    *d += v;
                }
            }
        }
    }
}

/// Multi-head attention within each window: `qkv [windows * n, heads * 3 * kd]` (per head
/// `[q | k | v]`) -> `[windows * n, heads * kd]`; scores `q kᵀ * kd^-0.5 + bias`, with the
/// learned bias of the offset `(|dy|, |dx|)` (`ab [heads, n]`, indexed `|dy| * ws + |dx|`).
fn window_attention(
    qkv: &[f32],
    windows: usize,
    n: usize,
    heads: usize,
    kd: usize,
    ws: usize,
    ab: &[f32],
) -> Vec<f32> {
    let c = heads * kd;
    let scale = (1.0 / (kd as f64).sqrt()) as f32;
    let offset: Vec<usize> = (0..n * n)
        .map(|i| {
            let (p1, p2) = (i / n, i % n);
            let (y1, x1, y2, x2) = (p1 / ws, p1 % ws, p2 / ws, p2 % ws);
            y1.abs_diff(y2) * ws + x1.abs_diff(x2)
        })
        .collect();
    let mut out = vec![0.0f32; windows * n * c];
    ops::par_items(&mut out, n * c, 1, |win, part| {
        let rows = &qkv[win * n * 3 * c..(win + 1) * n * 3 * c];
        for h in 0..heads {
            let col = |j: usize| -> Vec<f32> {
                (0..n)
                    .flat_map(|t| rows[t * 3 * c + h * 3 * kd + j * kd..][..kd].to_vec())
                    .collect()
            };
            let (q, k, v) = (col(0), col(1), col(2));
            let kt = ops::transpose(&k, n, kd);
            let mut s = Product::new(&kt, kd, n, None);
            let mut scores = vec![0.0f32; n * n];
            s.rows(&q, &mut scores);
            for (i, v) in scores.iter_mut().enumerate() {
                *v = *v * scale + ab[h * n + offset[i]];
            }
            softmax_rows(&mut scores, n);
            s = Product::new(&v, n, kd, None);
            let mut o = vec![0.0f32; n * kd];
            s.rows(&scores, &mut o);
            for t in 0..n {
                part[t * c + h * kd..t * c + (h + 1) * kd]
                    .copy_from_slice(&o[t * kd..(t + 1) * kd]);
            }
        }
    });
    out
}

/// Patch merging on tokens: 1x1 (`c -> c_out`), GELU, depthwise 3x3 (stride 2, or 1 into
/// the 320-channel stage, as upstream), GELU, 1x1.
fn merge(
    p: &Params,
    pre: &str,
    b: &mut Batch,
    c_out: usize,
    obs: &mut dyn Observer,
) -> Result<(), Error> {
    let stride = if matches!(c_out, 320 | 448 | 576) {
        1
    } else {
        2
    };
    let (w1, b1) = conv1x1(p, &format!("{pre}.conv1.c"), b.c, c_out, true)?;
    let mut y = matmul(&b.x, b.rows(), b.c, &w1, c_out, b1);
    obs.encoder_output(&format!("{pre}.conv1.c"), &mut y, c_out)?;
    gelu(&mut y);
    let (wd, bd) = depthwise(p, &format!("{pre}.conv2.c"), c_out)?;
    let side = (b.side - 1) / stride + 1;
    let per_image = b.side * b.side * c_out;
    let mut z = Vec::with_capacity(b.images * side * side * c_out);
    for img in y.chunks_exact(per_image) {
        z.extend(depthwise3x3(img, b.side, b.side, c_out, wd, bd, stride));
    }
    gelu(&mut z);
    let (w3, b3) = conv1x1(p, &format!("{pre}.conv3.c"), c_out, c_out, true)?;
    let rows = b.images * side * side;
    let mut out = matmul(&z, rows, c_out, &w3, c_out, b3);
    obs.encoder_output(&format!("{pre}.conv3.c"), &mut out, c_out)?;
    b.x = out;
    b.side = side;
    b.c = c_out;
    Ok(())
}

/// The neck of one image: tokens `[side^2, c]` -> 1x1 (no bias) -> LayerNorm2d -> 3x3
/// (padding 1, no bias) -> LayerNorm2d -> `[dim, side, side]` channel-major.
fn neck(p: &Params, x: &[f32], side: usize, c: usize, dim: usize) -> Result<Vec<f32>, Error> {
    let px = side * side;
    let (w, _) = conv1x1(p, "image_encoder.neck.conv1", c, dim, false)?;
    let mut y = matmul(x, px, c, &w, dim, None);
    let ln = |name: &str| -> Result<(&[f32], &[f32]), Error> {
        Ok((
            p.values(&format!("image_encoder.neck.{name}.weight"), &[dim])?,
            p.values(&format!("image_encoder.neck.{name}.bias"), &[dim])?,
        ))
    };
    let (g, be) = ln("ln1")?;
    layer_norm(&mut y, dim, g, Some(be), LN2D_EPS);
    // 3x3 as one product over (tap, channel) columns, taps row-major, padding zeros.
    let w = p.values("image_encoder.neck.conv2.weight", &[dim, dim, 3, 3])?;
    let mut wm = vec![0.0f32; 9 * dim * dim];
    for o in 0..dim {
        for ci in 0..dim {
            for t in 0..9 {
                wm[(t * dim + ci) * dim + o] = w[(o * dim + ci) * 9 + t];
            }
        }
    }
    let mut cols = vec![0.0f32; px * 9 * dim];
    for yy in 0..side {
        for xx in 0..side {
            for t in 0..9 {
                let (iy, ix) = ((yy + t / 3) as isize - 1, (xx + t % 3) as isize - 1);
                if iy < 0 || ix < 0 || iy as usize >= side || ix as usize >= side {
                    continue;
                }
                let src = (iy as usize * side + ix as usize) * dim;
                let dst = ((yy * side + xx) * 9 + t) * dim;
                cols[dst..dst + dim].copy_from_slice(&y[src..src + dim]);
            }
        }
    }
    let mut z = matmul(&cols, px, 9 * dim, &wm, dim, None);
    let (g, be) = ln("ln2")?;
    layer_norm(&mut z, dim, g, Some(be), LN2D_EPS);
    Ok(ops::transpose(&z, px, dim))
}
