//! SAM two-way transformer: prompt tokens and image tokens attend to each other.
//!
//! Mirrors `segment_anything/modeling/transformer.py`. Field names equal the PyTorch
//! state-dict names.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::common::{MlpBlock, contiguous};
use super::kernels::softmax;

/// Multi-head attention with an optional down-projection of the internal width.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection `dim -> internal`.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection `internal -> dim`.
    pub out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, downsample_rate: usize, device: &Device) -> Self {
        let internal = dim / downsample_rate;
        Self {
            q_proj: LinearConfig::new(dim, internal).init(device),
            k_proj: LinearConfig::new(dim, internal).init(device),
            v_proj: LinearConfig::new(dim, internal).init(device),
            out_proj: LinearConfig::new(internal, dim).init(device),
            num_heads,
        }
    }

    /// `q [B, Nq, dim], k [B, Nk, dim], v [B, Nk, dim] -> [B, Nq, dim]`.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        let c_per_head = q.dims()[3];
        let attn = q.matmul(k.swap_dims(2, 3)) / (c_per_head as f64).sqrt();
        let attn = softmax(attn, 3);
        let out = attn.matmul(v); // [B, heads, Nq, c]
        let [b, h, n, c] = out.dims();
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, h * c]))
    }

    /// Token→image cross-attention (few queries, many keys) computed without projecting
    /// the keys and values. Per head `h`, with `W` the `[dim, internal]` weights:
    /// `scores_h = (q_h W_k,hᵀ) kᵀ` (the key bias only adds a constant per query, which the
    /// softmax removes) and `out_h = (P_h v) W_v,h + b_v,h` (each row of `P_h` sums to 1).
    /// Same values as [`Self::forward`] up to f32 rounding, in `2 H Nq Nk dim`
    /// multiply-adds instead of `2 Nk dim internal` (59 M instead of 268 M in LiteMedSAM).
    ///
    /// `q [B, Nq, dim], k [B, Nk, dim], v [B, Nk, dim] -> [B, Nq, dim]`.
    pub fn forward_few_queries(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let h = self.num_heads;
        let [dim, internal] = self.k_proj.weight.dims();
        let c = internal / h;
        let q = self.separate_heads(self.q_proj.forward(q)); // [B, H, Nq, c]
        let wk = self.per_head(&self.k_proj).swap_dims(1, 2); // [H, c, dim]
        let [b, _, nq, _] = q.dims();
        // The heads share k and v: one product over all heads' queries (H*Nq rows) each.
        let qk = q
            .matmul(wk.unsqueeze_dim::<4>(0)) // [B, H, Nq, dim]
            .reshape([b, h * nq, dim]);
        let attn = softmax(qk.matmul(k.swap_dims(1, 2)) / (c as f64).sqrt(), 2); // [B, H*Nq, Nk]
        let pv = attn.matmul(v).reshape([b, h, nq, dim]); // [B, H, Nq, dim]
        let wv = self.per_head(&self.v_proj); // [H, dim, c]
        let out = pv.matmul(wv.unsqueeze_dim::<4>(0)); // [B, H, Nq, c]
        let out = match &self.v_proj.bias {
            Some(bias) => out + bias.val().reshape([1, h, 1, c]),
            None => out,
        };
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, nq, internal]))
    }

    /// Image→token cross-attention (many queries, few keys) computed without projecting
    /// the queries, with the output projection applied to the values. Per head `h`:
    /// `scores_h = q (W_q,h K_hᵀ) + b_q,h K_hᵀ` and `out = Σ_h P_h (V_h W_o,h) + b_o`, each
    /// as one matmul over the heads' keys side by side. Same values as [`Self::forward`]
    /// up to f32 rounding, in `2 Nq dim H Nk` multiply-adds instead of `2 Nq dim internal`
    /// (59 M instead of 268 M in LiteMedSAM).
    ///
    /// `q [B, Nq, dim], k [B, Nk, dim], v [B, Nk, dim] -> [B, Nq, dim]`.
    pub fn forward_few_keys(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let h = self.num_heads;
        let [dim, internal] = self.q_proj.weight.dims();
        let c = internal / h;
        let [b, nq, _] = q.dims();
        let nk = k.dims()[1];
        let kt = self.separate_heads(self.k_proj.forward(k)).swap_dims(2, 3); // [B, H, c, Nk]
        let v = self.separate_heads(self.v_proj.forward(v)); // [B, H, Nk, c]
        let wq = self.per_head(&self.q_proj); // [H, dim, c]
        let m = wq
            .unsqueeze_dim::<4>(0)
            .matmul(kt.clone()) // [B, H, dim, Nk]
            .permute([0, 2, 1, 3])
            .reshape([b, dim, h * nk]);
        let scores = q.matmul(m); // [B, Nq, H*Nk]
        let scores = match &self.q_proj.bias {
            Some(bias) => {
                let r = bias.val().reshape([1, h, 1, c]).matmul(kt); // [B, H, 1, Nk]
                scores + r.reshape([b, 1, h * nk])
            }
            None => scores,
        };
        let attn =
            softmax(scores.reshape([b, nq, h, nk]) / (c as f64).sqrt(), 3).reshape([b, nq, h * nk]);
        let wo = self.out_proj.weight.val().reshape([h, c, dim]); // [H, c, dim]
        let u = v
            .matmul(wo.unsqueeze_dim::<4>(0)) // [B, H, Nk, dim]
            .reshape([b, h * nk, dim]);
        let out = attn.matmul(u); // [B, Nq, dim]
        match &self.out_proj.bias {
            Some(bias) => out + bias.val().reshape([1, 1, dim]),
            None => out,
        }
    }

    /// A `[dim, internal]` projection's weight split by head: `[heads, dim, internal / heads]`.
    fn per_head(&self, projection: &Linear) -> Tensor<3> {
        let [dim, internal] = projection.weight.dims();
        let h = self.num_heads;
        projection
            .weight
            .val()
            .reshape([dim, h, internal / h])
            .permute([1, 0, 2])
    }

    /// `[B, N, C] -> [B, heads, N, C / heads]`.
    fn separate_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }
}

/// One two-way block: token self-attention, token→image cross-attention, token MLP,
/// image→token cross-attention; each followed by a LayerNorm.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    /// Self-attention of the sparse tokens.
    pub self_attn: Attention,
    /// After self-attention.
    pub norm1: LayerNorm,
    /// Tokens attend to the image.
    pub cross_attn_token_to_image: Attention,
    /// After token→image.
    pub norm2: LayerNorm,
    /// Token MLP (ReLU).
    pub mlp: MlpBlock,
    /// After the MLP.
    pub norm3: LayerNorm,
    /// After image→token.
    pub norm4: LayerNorm,
    /// Image attends to the tokens.
    pub cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    /// `queries [B, Nq, C], keys [B, Nk, C]` (+ their positional encodings) `->` updated pair.
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        // `keys + key_pe` is the same in both cross attentions (keys change only at the
        // end of the block): computed once.
        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe;
        let queries = queries
            + self
                .cross_attn_token_to_image
                .forward_few_queries(q, k.clone(), keys.clone());
        let queries = self.norm2.forward(queries);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = queries.clone() + query_pe;
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward_few_keys(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

/// The two-way transformer (depth 2, width 256, 8 heads, MLP 2048 in LiteMedSAM).
#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    /// Blocks.
    pub layers: Vec<TwoWayAttentionBlock>,
    /// Final token→image attention.
    pub final_attn_token_to_image: Attention,
    /// Final norm of the tokens.
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// Build with `depth` blocks of width `dim`.
    pub fn new(
        depth: usize,
        dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        device: &Device,
    ) -> Self {
        let ln = || LayerNormConfig::new(dim).init(device);
        Self {
            layers: (0..depth)
                .map(|i| TwoWayAttentionBlock {
                    self_attn: Attention::new(dim, num_heads, 1, device),
                    norm1: ln(),
                    cross_attn_token_to_image: Attention::new(dim, num_heads, 2, device),
                    norm2: ln(),
                    mlp: MlpBlock::new(dim, mlp_dim, true, device),
                    norm3: ln(),
                    norm4: ln(),
                    cross_attn_image_to_token: Attention::new(dim, num_heads, 2, device),
                    skip_first_layer_pe: i == 0,
                })
                .collect(),
            final_attn_token_to_image: Attention::new(dim, num_heads, 2, device),
            norm_final_attn: ln(),
        }
    }

    /// `image [B, C, H, W], image_pe [B, C, H, W], tokens [B, N, C]`
    /// `-> (tokens [B, N, C], image tokens [B, H*W, C])`.
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: Tensor<4>,
        tokens: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        // Token layout `[B, H*W, C]`, copied once out of the channel-first view so that the
        // additions and norms below run on contiguous data (a strided add is 10x slower on
        // the CPU backend).
        let image = contiguous(image.flatten::<3>(2, 3).swap_dims(1, 2));
        let image_pe = contiguous(image_pe.flatten::<3>(2, 3).swap_dims(1, 2));
        let mut queries = tokens.clone();
        let mut keys = image;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, tokens.clone(), image_pe.clone());
        }
        let q = queries.clone() + tokens;
        let k = keys.clone() + image_pe;
        let queries = queries
            + self
                .final_attn_token_to_image
                .forward_few_queries(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The reassociated cross attentions give what the plain one gives, for LiteMedSAM's
    /// shapes (width 256, 8 heads, internal width 128, 7 tokens, 4096 image tokens) and
    /// with nonzero biases everywhere.
    #[test]
    fn reassociated_cross_attention_equals_the_plain_one() {
        let device = Device::flex();
        let mut attn = Attention::new(256, 8, 2, &device);
        for lin in [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.out_proj,
        ] {
            let n = lin.weight.dims()[1];
            lin.bias = Some(burn::module::Param::from_tensor(Tensor::random(
                [n],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            )));
        }
        let tokens = Tensor::<3>::random([1, 7, 256], Distribution::Normal(0.0, 1.0), &device);
        let image = Tensor::<3>::random([1, 4096, 256], Distribution::Normal(0.0, 1.0), &device);
        let image_v = Tensor::<3>::random([1, 4096, 256], Distribution::Normal(0.0, 1.0), &device);

        let plain = attn.forward(tokens.clone(), image.clone(), image_v.clone());
        let fast = attn.forward_few_queries(tokens.clone(), image.clone(), image_v);
        let d = max_diff(plain.clone(), fast);
        let scale = plain.abs().max().into_scalar::<f32>();
        assert!(
            d <= 1e-5 * scale.max(1.0),
            "token->image: max |diff| {d} (scale {scale})"
        );

        let tokens_v = Tensor::<3>::random([1, 7, 256], Distribution::Normal(0.0, 1.0), &device);
        let plain = attn.forward(image.clone(), tokens.clone(), tokens_v.clone());
        let fast = attn.forward_few_keys(image, tokens, tokens_v);
        let d = max_diff(plain.clone(), fast);
        let scale = plain.abs().max().into_scalar::<f32>();
        assert!(
            d <= 1e-5 * scale.max(1.0),
            "image->token: max |diff| {d} (scale {scale})"
        );
    }
}
