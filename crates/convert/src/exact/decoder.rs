//! The SAM prompt encoder and mask decoder of LiteMedSAM in the fixed order of
//! [`super::ops`], tokens channels last. Mirrors [`medfm::model::prompt_encoder`],
//! [`medfm::model::two_way_transformer`] and [`medfm::model::mask_decoder`] (upstream
//! `prompt_encoder.py`, `transformer.py`, `mask_decoder.py`) with the plain attention
//! (no reassociation); the hyper-parameters are read from [`MaskDecoderConfig`] and
//! [`PromptEncoderConfig`]. Box and point prompts; mask prompts are not part of it.

use super::ops::{self, gelu, layer_norm, matmul, relu, softmax_rows};
use super::{Observer, Params};
use medfm::model::Error;
use medfm::model::mask_decoder::MaskDecoderConfig;
use medfm::model::prompt_encoder::PromptEncoderConfig;

/// LayerNorm epsilon of the two-way transformer (PyTorch's default).
const LN_EPS: f32 = 1e-5;
/// LayerNorm2d epsilon of the output upscaling.
const LN2D_EPS: f32 = 1e-6;

/// A prompt in model-input pixel coordinates (the 256 x 256 space).
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// Box `[x0, y0, x1, y1]`.
    pub bbox: Option<[f32; 4]>,
    /// Points `(x, y, positive)`.
    pub points: Vec<(f32, f32, bool)>,
}

/// How far [`decode`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// To the mask logits and IoU predictions.
    Masks,
    /// To the last two-way block's MLP (what the 4-bit layers' calibration needs).
    TokenLayers,
}

/// Low-res mask logits `[M, 256, 256]` and predicted IoUs `[M]` (`M` = 3 with multimask,
/// else 1), as [`medfm::model::Decoded`] holds them.
#[derive(Debug, Clone)]
pub struct Masks {
    /// Logits, mask after mask, row-major.
    pub low_res_logits: Vec<f32>,
    /// Predicted IoU per mask.
    pub iou: Vec<f32>,
}

/// Random Fourier features of normalised coordinates: `[sin(2π(2c - 1)G), cos(...)]`
/// with `G [2, dim / 2]`.
fn fourier(g: &[f32], half: usize, x: f32, y: f32) -> Vec<f32> {
    let (u, v) = (x * 2.0 - 1.0, y * 2.0 - 1.0);
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let t: Vec<f32> = (0..half)
        .map(|j| (0.0 + u * g[j] + v * g[half + j]) * two_pi)
        .collect();
    t.iter()
        .map(|&t| libm::sinf(t))
        .chain(t.iter().map(|&t| libm::cosf(t)))
        .collect()
}

fn gaussian(p: &Params, dim: usize) -> Result<&[f32], Error> {
    p.values(
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        &[2, dim / 2],
    )
}

/// The dense positional encoding of the embedding grid as tokens `[side * side, dim]`
/// (pixel centres, row-major).
pub fn image_pe(p: &Params) -> Result<Vec<f32>, Error> {
    let cfg = PromptEncoderConfig::new();
    let (side, dim) = (cfg.image_embedding_size, cfg.embed_dim);
    let g = gaussian(p, dim)?;
    let mut out = Vec::with_capacity(side * side * dim);
    for i in 0..side {
        for j in 0..side {
            let (x, y) = (
                (j as f32 + 0.5) / side as f32,
                (i as f32 + 0.5) / side as f32,
            );
            out.extend(fourier(g, dim / 2, x, y));
        }
    }
    Ok(out)
}

/// Sparse prompt tokens `[N, dim]`: points (plus a padding point when there is no box),
/// then the two box corners, each its positional encoding plus its learned embedding.
fn sparse(p: &Params, prompt: &Prompt, dim: usize, size: usize) -> Result<Vec<f32>, Error> {
    let g = gaussian(p, dim)?;
    let emb = |name: &str| p.values(&format!("prompt_encoder.{name}.weight"), &[1, dim]);
    let s = size as f32;
    let corner = |x: f32, y: f32, e: &[f32]| -> Vec<f32> {
        let pe = fourier(g, dim / 2, (x + 0.5) / s, (y + 0.5) / s);
        pe.iter().zip(e).map(|(a, b)| a + b).collect()
    };
    let mut rows = Vec::new();
    for &(x, y, positive) in &prompt.points {
        let e = emb(&format!("point_embeddings.{}", usize::from(positive)))?;
        rows.extend(corner(x, y, e));
    }
    if let Some([x0, y0, x1, y1]) = prompt.bbox {
        rows.extend(corner(x0, y0, emb("point_embeddings.2")?));
        rows.extend(corner(x1, y1, emb("point_embeddings.3")?));
    } else if !prompt.points.is_empty() {
        // The padding point after the points: its encoding is zeroed, only the embedding.
        rows.extend_from_slice(emb("not_a_point_embed")?);
    }
    Ok(rows)
}

/// A Linear layer of the decoder on `x [rows, k]` -> `[rows, n]`, its input shown to `obs`.
fn linear(
    p: &Params,
    layer: &str,
    x: &[f32],
    k: usize,
    n: usize,
    obs: &mut dyn Observer,
) -> Result<Vec<f32>, Error> {
    let w = p.values(&format!("{layer}.weight"), &[k, n])?;
    let b = p.values(&format!("{layer}.bias"), &[n])?;
    obs.decoder_input(layer, x, k);
    Ok(matmul(x, x.len() / k, k, w, n, Some(b)))
}

/// SAM's multi-head attention: projections to `internal`, per head `softmax(q kᵀ /
/// sqrt(c)) v`, output projection; `q [nq, dim]`, `k, v [nk, dim]` -> `[nq, dim]`.
#[allow(clippy::too_many_arguments)]
fn attention(
    p: &Params,
    pre: &str,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dim: usize,
    internal: usize,
    heads: usize,
    obs: &mut dyn Observer,
) -> Result<Vec<f32>, Error> {
    let (nq, nk) = (q.len() / dim, k.len() / dim);
    let q = linear(p, &format!("{pre}.q_proj"), q, dim, internal, obs)?;
    let k = linear(p, &format!("{pre}.k_proj"), k, dim, internal, obs)?;
    let v = linear(p, &format!("{pre}.v_proj"), v, dim, internal, obs)?;
    let c = internal / heads;
    let div = (c as f32).sqrt();
    let mut out = vec![0.0f32; nq * internal];
    for h in 0..heads {
        let head = |x: &[f32], n: usize| -> Vec<f32> {
            (0..n)
                .flat_map(|t| x[t * internal + h * c..][..c].to_vec())
                .collect()
        };
        let (qh, kh, vh) = (head(&q, nq), head(&k, nk), head(&v, nk));
        let kt = ops::transpose(&kh, nk, c);
        let mut scores = matmul(&qh, nq, c, &kt, nk, None);
        for s in scores.iter_mut() {
            *s /= div;
        }
        ops::par_items(&mut scores, nk, 256, |_, rows| softmax_rows(rows, nk));
        let o = matmul(&scores, nq, nk, &vh, c, None);
        for t in 0..nq {
            out[t * internal + h * c..t * internal + (h + 1) * c]
                .copy_from_slice(&o[t * c..(t + 1) * c]);
        }
    }
    linear(p, &format!("{pre}.out_proj"), &out, internal, dim, obs)
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn add_assign(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

fn norm(p: &Params, pre: &str, x: &mut [f32], dim: usize) -> Result<(), Error> {
    let g = p.values(&format!("{pre}.gamma"), &[dim])?;
    let b = p.values(&format!("{pre}.beta"), &[dim])?;
    layer_norm(x, dim, g, Some(b), LN_EPS);
    Ok(())
}

/// The tokens attend to the image (`queries + pe` against `keys + pe`, values `keys`), the
/// result added to the queries and normalised: the middle of a two-way block and the
/// transformer's final step. `to_image`: `(keys + pe, keys, query pe)`.
#[allow(clippy::too_many_arguments)]
fn tokens_attend_to_image(
    p: &Params,
    pre: &str,
    attn: &str,
    norm_name: &str,
    queries: &mut [f32],
    (k, keys, tokens): (&[f32], &[f32], &[f32]),
    heads: usize,
    obs: &mut dyn Observer,
) -> Result<(), Error> {
    let dim = MaskDecoderConfig::new().transformer_dim;
    let q = add(queries, tokens);
    let a = attention(
        p,
        &format!("{pre}.{attn}"),
        &q,
        k,
        keys,
        dim,
        dim / 2,
        heads,
        obs,
    )?;
    add_assign(queries, &a);
    norm(p, &format!("{pre}.{norm_name}"), queries, dim)
}

/// The decoder's `MLP`: Linear layers with ReLU between.
fn mlp(
    p: &Params,
    pre: &str,
    x: &[f32],
    dims: &[usize],
    obs: &mut dyn Observer,
) -> Result<Vec<f32>, Error> {
    let mut x = x.to_vec();
    for (i, w) in dims.windows(2).enumerate() {
        x = linear(p, &format!("{pre}.layers.{i}"), &x, w[0], w[1], obs)?;
        if i + 2 < dims.len() {
            relu(&mut x);
        }
    }
    Ok(x)
}

/// Decode one prompt against an image embedding (`[dim, 64, 64]` channel-major, as
/// [`super::encoder::stages`] and the Burn model give it) with the grid's positional
/// encoding ([`image_pe`]). Returns the masks, or `None` when `until` stops earlier.
pub fn decode(
    p: &Params,
    embedding: &[f32],
    image_pe: &[f32],
    prompt: &Prompt,
    multimask: bool,
    until: Until,
    obs: &mut dyn Observer,
) -> Result<Option<Masks>, Error> {
    let cfg = MaskDecoderConfig::new();
    let pcfg = PromptEncoderConfig::new();
    let (dim, heads) = (cfg.transformer_dim, cfg.num_heads);
    let (side, size) = (pcfg.image_embedding_size, pcfg.input_image_size);
    let px = side * side;
    if embedding.len() != dim * px || image_pe.len() != dim * px {
        return Err(Error::Input {
            tensor: "embedding",
            problem: format!("the decoder takes a [{dim}, {side}, {side}] embedding and encoding"),
        });
    }
    if prompt.bbox.is_none() && prompt.points.is_empty() {
        return Err(Error::Input {
            tensor: "prompt",
            problem: "a prompt needs a box or at least one point".into(),
        });
    }
    let n_mask = cfg.num_multimask_outputs + 1;
    // Tokens: IoU token, mask tokens, sparse prompt tokens.
    let mut tokens = p
        .values("mask_decoder.iou_token.weight", &[1, dim])?
        .to_vec();
    tokens.extend_from_slice(p.values("mask_decoder.mask_tokens.weight", &[n_mask, dim])?);
    tokens.extend(sparse(p, prompt, dim, size)?);
    // Image tokens plus the dense (no-mask) embedding.
    let no_mask = p.values("prompt_encoder.no_mask_embed.weight", &[1, dim])?;
    let mut keys = ops::transpose(embedding, dim, px);
    for row in keys.chunks_exact_mut(dim) {
        add_assign(row, no_mask);
    }

    // The two-way transformer.
    let t = "mask_decoder.transformer";
    let mut queries = tokens.clone();
    for i in 0..cfg.depth {
        let pre = format!("{t}.layers.{i}");
        if i == 0 {
            // The first block's self-attention skips the positional encoding.
            queries = attention(
                p,
                &format!("{pre}.self_attn"),
                &queries,
                &queries,
                &queries,
                dim,
                dim,
                heads,
                obs,
            )?;
        } else {
            let q = add(&queries, &tokens);
            let a = attention(
                p,
                &format!("{pre}.self_attn"),
                &q,
                &q,
                &queries,
                dim,
                dim,
                heads,
                obs,
            )?;
            add_assign(&mut queries, &a);
        }
        norm(p, &format!("{pre}.norm1"), &mut queries, dim)?;
        let k = add(&keys, image_pe);
        let to_image = (k.as_slice(), keys.as_slice(), &tokens[..]);
        tokens_attend_to_image(
            p,
            &pre,
            "cross_attn_token_to_image",
            "norm2",
            &mut queries,
            to_image,
            heads,
            obs,
        )?;
        let mut h = linear(
            p,
            &format!("{pre}.mlp.lin1"),
            &queries,
            dim,
            cfg.mlp_dim,
            obs,
        )?;
        relu(&mut h);
        let m = linear(p, &format!("{pre}.mlp.lin2"), &h, cfg.mlp_dim, dim, obs)?;
        add_assign(&mut queries, &m);
        norm(p, &format!("{pre}.norm3"), &mut queries, dim)?;
        if until == Until::TokenLayers && i + 1 == cfg.depth {
            return Ok(None);
        }
        let q = add(&queries, &tokens);
        let a = attention(
            p,
            &format!("{pre}.cross_attn_image_to_token"),
            &k,
            &q,
            &queries,
            dim,
            dim / 2,
            heads,
            obs,
        )?;
        add_assign(&mut keys, &a);
        norm(p, &format!("{pre}.norm4"), &mut keys, dim)?;
    }
    let k = add(&keys, image_pe);
    let to_image = (k.as_slice(), keys.as_slice(), &tokens[..]);
    tokens_attend_to_image(
        p,
        t,
        "final_attn_token_to_image",
        "norm_final_attn",
        &mut queries,
        to_image,
        heads,
        obs,
    )?;

    // Upscaling of the image tokens: two 2x2 stride-2 transposed convolutions.
    let up = upscale(p, &keys, side, dim)?;
    let c8 = dim / 8;
    let hyper: Vec<f32> = (0..n_mask)
        .map(|m| {
            let token = &queries[(1 + m) * dim..(2 + m) * dim];
            mlp(
                p,
                &format!("mask_decoder.output_hypernetworks_mlps.{m}"),
                token,
                &[dim, dim, dim, c8],
                obs,
            )
        })
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    let up_px = 16 * px;
    let logits = matmul(
        &hyper,
        n_mask,
        c8,
        &ops::transpose(&up, up_px, c8),
        up_px,
        None,
    );
    let iou = mlp(
        p,
        "mask_decoder.iou_prediction_head",
        &queries[..dim],
        &[
            dim,
            cfg.iou_head_hidden_dim,
            cfg.iou_head_hidden_dim,
            n_mask,
        ],
        obs,
    )?;
    let (start, len) = if multimask { (1, n_mask - 1) } else { (0, 1) };
    Ok(Some(Masks {
        low_res_logits: logits[start * up_px..(start + len) * up_px].to_vec(),
        iou: iou[start..start + len].to_vec(),
    }))
}

/// `output_upscaling`: tokens `[side^2, dim]` -> transposed 2x2 stride-2 convolution ->
/// LayerNorm2d -> GELU -> transposed convolution -> GELU: `[(4 side)^2, dim / 8]`.
fn upscale(p: &Params, x: &[f32], side: usize, dim: usize) -> Result<Vec<f32>, Error> {
    let pre = "mask_decoder.output_upscaling";
    let y = conv_transpose_2x2(p, &format!("{pre}.conv1"), x, side, dim, dim / 4)?;
    let mut y = y;
    let g = p.values(&format!("{pre}.ln.weight"), &[dim / 4])?;
    let b = p.values(&format!("{pre}.ln.bias"), &[dim / 4])?;
    layer_norm(&mut y, dim / 4, g, Some(b), LN2D_EPS);
    gelu(&mut y);
    let mut z = conv_transpose_2x2(p, &format!("{pre}.conv2"), &y, 2 * side, dim / 4, dim / 8)?;
    gelu(&mut z);
    Ok(z)
}

/// A 2x2 stride-2 transposed convolution (`weight [ci, co, 2, 2]`, bias) on tokens
/// `[side^2, ci]` -> `[(2 side)^2, co]`: one product per input pixel, each tap placed at
/// `(2i + a, 2j + b)`.
fn conv_transpose_2x2(
    p: &Params,
    pre: &str,
    x: &[f32],
    side: usize,
    ci: usize,
    co: usize,
) -> Result<Vec<f32>, Error> {
    let w = p.values(&format!("{pre}.weight"), &[ci, co, 2, 2])?;
    let bias = p.values(&format!("{pre}.bias"), &[co])?;
    let mut wm = vec![0.0f32; ci * 4 * co];
    for i in 0..ci {
        for o in 0..co {
            for t in 0..4 {
                wm[i * 4 * co + t * co + o] = w[(i * co + o) * 4 + t];
            }
        }
    }
    let y = matmul(x, side * side, ci, &wm, 4 * co, None);
    let out_side = 2 * side;
    let mut out = vec![0.0f32; out_side * out_side * co];
    for i in 0..side {
        for j in 0..side {
            for t in 0..4 {
                let (a, b) = (t / 2, t % 2);
                let dst = ((2 * i + a) * out_side + 2 * j + b) * co;
                let src = (i * side + j) * 4 * co + t * co;
                for o in 0..co {
                    out[dst + o] = y[src + o] + bias[o];
                }
            }
        }
    }
    Ok(out)
}
