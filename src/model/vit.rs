//! DINOv2-compatible ViT (Hugging Face `Dinov2Model`, optionally with register tokens as
//! `Dinov2WithRegistersModel`), for bring-your-own encoders such as RAD-DINO.
//!
//! Patch embedding (a `p x p` stride-`p` convolution), CLS token, optional register
//! tokens, learned position embeddings (bicubic-interpolated to other grids exactly as
//! `Dinov2Embeddings.interpolate_pos_encoding`: `align_corners=False`, cubic a = -0.75,
//! border-clamped taps), pre-norm blocks with LayerScale, final LayerNorm. Outputs: the CLS
//! token and the mean of the patch tokens after the final LayerNorm.
//!
//! Weights: a Hugging Face `model.safetensors` with `Dinov2Model` key names (both the
//! transformers 4 names `attention.attention.{query,key,value}` / `attention.output.dense`
//! and the transformers 5 names `attention.{q,k,v,o}_proj`), config from `config.json`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};

use super::Error;
use super::kernels::{gelu, softmax};

/// The fields of a Hugging Face DINOv2 `config.json` this implementation reads.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VitConfig {
    /// Token width D.
    pub hidden_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Attention heads (D must be divisible by it).
    pub num_attention_heads: usize,
    /// MLP hidden width = `mlp_ratio * D`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Patch side p.
    pub patch_size: usize,
    /// Training image side (the position embeddings cover `(image_size / p)^2` patches).
    pub image_size: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Whether q/k/v projections have biases.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// SwiGLU MLP (DINOv2 giant): not supported, refused.
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    /// Activation: only `gelu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Register tokens (`Dinov2WithRegistersModel`), 0 for plain DINOv2.
    #[serde(default)]
    pub num_register_tokens: usize,
    /// `dinov2` or `dinov2_with_registers` (the latter interpolates positions with
    /// `antialias=True`).
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

/// Largest token width accepted (DINOv2 giant: 1536).
const MAX_HIDDEN: usize = 4096;
/// Largest block count accepted (DINOv2 giant: 40).
const MAX_LAYERS: usize = 96;
/// Largest training image side accepted (DINOv2: 518).
const MAX_IMAGE: usize = 4096;

fn default_model_type() -> String {
    "dinov2".into()
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_channels() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}

impl VitConfig {
    /// Parse and check a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let c: VitConfig =
            serde_json::from_str(text).map_err(|e| Error::Weights(format!("config.json: {e}")))?;
        if c.use_swiglu_ffn {
            return Err(Error::Weights(
                "config.json: use_swiglu_ffn (DINOv2 giant) is not supported".into(),
            ));
        }
        if c.hidden_act != "gelu" {
            return Err(Error::Weights(format!(
                "config.json: hidden_act {:?} is not supported (only gelu)",
                c.hidden_act
            )));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::Weights(format!(
                "config.json: hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if !matches!(c.model_type.as_str(), "dinov2" | "dinov2_with_registers") {
            return Err(Error::Weights(format!(
                "config.json: model_type {:?} is not a DINOv2 (dinov2, dinov2_with_registers)",
                c.model_type
            )));
        }
        if c.patch_size == 0 || c.image_size < c.patch_size {
            return Err(Error::Weights(format!(
                "config.json: patch_size {} and image_size {} do not make a patch grid",
                c.patch_size, c.image_size
            )));
        }
        // Sizes are checked before anything is allocated from them: a config.json of a
        // few bytes must not make the model (or an input) take gigabytes.
        let bad = |field: &str, value: String, allowed: &str| {
            Err(Error::Weights(format!(
                "config.json: {field} {value} is not supported ({allowed})"
            )))
        };
        if c.num_channels != 3 {
            return bad(
                "num_channels",
                c.num_channels.to_string(),
                "the embedder feeds 3-channel images",
            );
        }
        if c.hidden_size == 0 || c.hidden_size > MAX_HIDDEN {
            return bad("hidden_size", c.hidden_size.to_string(), "1 to 4096");
        }
        if c.num_hidden_layers == 0 || c.num_hidden_layers > MAX_LAYERS {
            return bad(
                "num_hidden_layers",
                c.num_hidden_layers.to_string(),
                "1 to 96",
            );
        }
        if !(c.mlp_ratio.is_finite() && c.mlp_ratio > 0.0 && c.mlp_ratio <= 16.0) {
            return bad("mlp_ratio", c.mlp_ratio.to_string(), "above 0, at most 16");
        }
        if c.image_size > MAX_IMAGE {
            return bad("image_size", c.image_size.to_string(), "at most 4096");
        }
        if c.num_register_tokens > 64 {
            return bad(
                "num_register_tokens",
                c.num_register_tokens.to_string(),
                "at most 64",
            );
        }
        if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
            return bad(
                "layer_norm_eps",
                c.layer_norm_eps.to_string(),
                "a positive number",
            );
        }
        Ok(c)
    }

    /// The number of parameters the model of this configuration has (what a
    /// `model.safetensors` must hold; `from_json` bounds every factor).
    pub fn parameter_count(&self) -> u64 {
        let d = self.hidden_size as u64;
        let hidden = (d as f64 * self.mlp_ratio) as u64;
        let grid = (self.image_size / self.patch_size) as u64;
        let p = self.patch_size as u64;
        let embeddings = d * (1 + self.num_register_tokens as u64 + grid * grid + 1)
            + d * self.num_channels as u64 * p * p
            + d;
        let block = 4 * (d * d + d) + 2 * d * hidden + hidden + d + 6 * d;
        embeddings + self.num_hidden_layers as u64 * block + 2 * d
    }

    /// A model with this configuration (parameters to be loaded).
    pub fn init(&self, device: &Device) -> Vit {
        let d = self.hidden_size;
        let grid = self.image_size / self.patch_size;
        let hidden = (d as f64 * self.mlp_ratio) as usize;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Vit {
            embeddings: Embeddings {
                cls_token: Param::from_tensor(Tensor::zeros([1, 1, d], device)),
                register_tokens: (self.num_register_tokens > 0).then(|| {
                    Param::from_tensor(Tensor::zeros([1, self.num_register_tokens, d], device))
                }),
                position_embeddings: Param::from_tensor(Tensor::zeros(
                    [1, grid * grid + 1, d],
                    device,
                )),
                patch_embeddings: PatchEmbeddings {
                    projection: Conv2dConfig::new(
                        [self.num_channels, d],
                        [self.patch_size, self.patch_size],
                    )
                    .with_stride([self.patch_size, self.patch_size])
                    .init(device),
                },
            },
            encoder: Encoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| Block {
                        norm1: ln(),
                        attention: Attention {
                            q_proj: lin(d, d, self.qkv_bias),
                            k_proj: lin(d, d, self.qkv_bias),
                            v_proj: lin(d, d, self.qkv_bias),
                            o_proj: lin(d, d, true),
                            heads: self.num_attention_heads,
                        },
                        layer_scale1: LayerScale {
                            lambda1: Param::from_tensor(Tensor::ones([d], device)),
                        },
                        norm2: ln(),
                        mlp: Mlp {
                            fc1: lin(d, hidden, true),
                            fc2: lin(hidden, d, true),
                        },
                        layer_scale2: LayerScale {
                            lambda1: Param::from_tensor(Tensor::ones([d], device)),
                        },
                    })
                    .collect(),
            },
            layernorm: ln(),
            patch_size: self.patch_size,
            grid,
            registers: self.num_register_tokens,
            antialias: self.model_type == "dinov2_with_registers",
        }
    }
}

/// Patch embedding: `[B, C, H, W] -> [B, (H/p)*(W/p), D]`.
#[derive(Module, Debug)]
pub struct PatchEmbeddings {
    /// `p x p` convolution with stride p.
    pub projection: Conv2d,
}

/// CLS, registers and position embeddings.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// `[1, 1, D]`.
    pub cls_token: Param<Tensor<3>>,
    /// `[1, R, D]` when the model has register tokens.
    pub register_tokens: Option<Param<Tensor<3>>>,
    /// `[1, 1 + G*G, D]` for the training grid G.
    pub position_embeddings: Param<Tensor<3>>,
    /// The patch projection.
    pub patch_embeddings: PatchEmbeddings,
}

/// LayerScale: `x * lambda1`.
#[derive(Module, Debug)]
pub struct LayerScale {
    /// `[D]`.
    pub lambda1: Param<Tensor<1>>,
}

/// Multi-head self-attention.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    heads: usize,
}

impl Attention {
    /// `[B, N, D] -> [B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let split = |t: Tensor<3>| t.reshape([b, n, h, d / h]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let scale = ((d / h) as f64).powf(-0.5);
        let attn = softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, n, d]);
        self.o_proj.forward(out)
    }
}

/// The MLP: `fc2(gelu(fc1(x)))` (exact erf GELU, as `ACT2FN["gelu"]`).
#[derive(Module, Debug)]
pub struct Mlp {
    /// `D -> mlp_ratio * D`.
    pub fc1: Linear,
    /// `mlp_ratio * D -> D`.
    pub fc2: Linear,
}

/// One pre-norm block with LayerScale.
#[derive(Module, Debug)]
pub struct Block {
    /// Before attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attention: Attention,
    /// Scale of the attention branch.
    pub layer_scale1: LayerScale,
    /// Before the MLP.
    pub norm2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
    /// Scale of the MLP branch.
    pub layer_scale2: LayerScale,
}

impl Block {
    /// `[B, N, D] -> [B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let d = x.dims()[2];
        let s1 = self.layer_scale1.lambda1.val().reshape([1, 1, d]);
        let x = x.clone() + self.attention.forward(self.norm1.forward(x)) * s1;
        let s2 = self.layer_scale2.lambda1.val().reshape([1, 1, d]);
        let h = self
            .mlp
            .fc2
            .forward(gelu(self.mlp.fc1.forward(self.norm2.forward(x.clone()))));
        x + h * s2
    }
}

/// The stack of blocks.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Blocks (`encoder.layer.N` in the checkpoint).
    pub layer: Vec<Block>,
}

/// A DINOv2-compatible ViT.
#[derive(Module, Debug)]
pub struct Vit {
    /// Tokens and positions.
    pub embeddings: Embeddings,
    /// Blocks.
    pub encoder: Encoder,
    /// Final LayerNorm.
    pub layernorm: LayerNorm,
    patch_size: usize,
    grid: usize,
    registers: usize,
    antialias: bool,
}

/// What the ViT returns for a batch.
#[derive(Debug, Clone)]
pub struct VitOutput {
    /// CLS token after the final LayerNorm (`pooler_output`), `[B, D]`.
    pub cls: Tensor<2>,
    /// Mean of the patch tokens after the final LayerNorm, `[B, D]`.
    pub patch_mean: Tensor<2>,
    /// `last_hidden_state`, `[B, 1 + R + N, D]` (CLS, registers, patches).
    pub last_hidden: Tensor<3>,
}

/// Row `o` of the result holds the weights of the input samples for output sample `o` of
/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` from `n_in` to `n_out`:
/// `src = (o + 0.5) * n_in / n_out - 0.5`, taps at `floor(src) - 1 ..= floor(src) + 2`
/// clamped to the border, cubic convolution with a = -0.75. `[n_out * n_in]`, row-major.
pub fn bicubic_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let near = |t: f64| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0; // |t| <= 1
    let far = |t: f64| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A; // 1 < |t| < 2
    let scale = n_in as f64 / n_out as f64;
    let mut m = vec![0.0f32; n_out * n_in];
    for o in 0..n_out {
        let src = (o as f64 + 0.5) * scale - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let w = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            m[o * n_in + idx] += *wk as f32;
        }
    }
    m
}

/// Like [`bicubic_matrix`] for `interpolate(mode="bicubic", align_corners=False,
/// antialias=True)` (PyTorch's separable anti-aliased kernel, as PIL: a = -0.5, support
/// widened by the scale when shrinking, window clipped to the input, weights normalised).
pub fn bicubic_aa_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    const A: f64 = -0.5;
    let filter = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut m = vec![0.0f32; n_out * n_in];
    for o in 0..n_out {
        let center = scale * (o as f64 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(n_in as i64);
        let w: Vec<f64> = (xmin..xmax)
            .map(|j| filter((j as f64 - center + 0.5) * invscale))
            .collect();
        let total: f64 = w.iter().sum();
        for (j, wj) in (xmin..xmax).zip(w) {
            m[o * n_in + j as usize] = if total != 0.0 { wj / total } else { wj } as f32;
        }
    }
    m
}

impl Vit {
    /// Position embeddings for a `gh x gw` patch grid: `[1, 1 + gh*gw, D]`, the trained
    /// ones when the grid is the training grid, bicubic-interpolated otherwise.
    fn positions(&self, gh: usize, gw: usize) -> Tensor<3> {
        let pos = self.embeddings.position_embeddings.val();
        if gh == self.grid && gw == self.grid {
            return pos;
        }
        let [_, n, d] = pos.dims();
        let device = pos.device();
        let g = self.grid;
        let cls = pos.clone().slice([0..1, 0..1, 0..d]);
        // [1, G*G, D] -> [D, G, G]; rows then columns, each a matmul with the weights.
        let grid = pos
            .slice([0..1, 1..n, 0..d])
            .reshape([g, g, d])
            .permute([2, 0, 1]);
        let weights = if self.antialias {
            bicubic_aa_matrix
        } else {
            bicubic_matrix
        };
        let wh = Tensor::<2>::from_data(TensorData::new(weights(g, gh), [gh, g]), &device);
        let ww = Tensor::<2>::from_data(TensorData::new(weights(g, gw), [gw, g]), &device);
        let rows = wh.unsqueeze::<3>().expand([d, gh, g]).matmul(grid); // [D, gh, G]
        let both = rows.matmul(ww.transpose().unsqueeze::<3>().expand([d, g, gw])); // [D, gh, gw]
        let patches = both.permute([1, 2, 0]).reshape([1, gh * gw, d]);
        Tensor::cat(vec![cls, patches], 1)
    }

    /// `pixel_values [B, C, H, W]` (H, W multiples of the patch size; other sizes are
    /// cropped by the stride-p convolution, as upstream) -> [`VitOutput`].
    pub fn forward(&self, x: Tensor<4>) -> VitOutput {
        let [b, _, h, w] = x.dims();
        let (gh, gw) = (h / self.patch_size, w / self.patch_size);
        let patches = self.embeddings.patch_embeddings.projection.forward(x); // [B, D, gh, gw]
        let d = patches.dims()[1];
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2); // [B, N, D]
        let cls = self.embeddings.cls_token.val().expand([b, 1, d]);
        let tokens = Tensor::cat(vec![cls, patches], 1) + self.positions(gh, gw);
        let tokens = match &self.embeddings.register_tokens {
            Some(r) => {
                let n = tokens.dims()[1];
                let regs = r.val().expand([b, self.registers, d]);
                Tensor::cat(
                    vec![
                        tokens.clone().slice([0..b, 0..1, 0..d]),
                        regs,
                        tokens.slice([0..b, 1..n, 0..d]),
                    ],
                    1,
                )
            }
            None => tokens,
        };
        let mut x = tokens;
        for block in &self.encoder.layer {
            x = block.forward(x);
        }
        let x = self.layernorm.forward(x);
        let n = x.dims()[1];
        let cls = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        let patch_mean = x
            .clone()
            .slice([0..b, 1 + self.registers..n, 0..d])
            .mean_dim(1)
            .reshape([b, d]);
        VitOutput {
            cls,
            patch_mean,
            last_hidden: x,
        }
    }

    /// Token width D.
    pub fn dim(&self) -> usize {
        self.layernorm.gamma.dims()[0]
    }

    /// Training image side.
    pub fn image_size(&self) -> usize {
        self.grid * self.patch_size
    }
}

/// Load a DINOv2 model from the bytes of its `config.json` and `model.safetensors`
/// (see [`VitConfig::load`]).
pub fn load_safetensors(config: &str, weights: Vec<u8>, device: &Device) -> Result<Vit, Error> {
    VitConfig::from_json(config)?.load(weights, device)
}

impl VitConfig {
    /// A model with this configuration filled from the bytes of a `model.safetensors`.
    /// Every parameter must be filled (`embeddings.mask_token` and other tensors the model
    /// does not use, and a `dinov2.` prefix, are accepted and ignored); otherwise the file
    /// is refused with what differs.
    pub fn load(&self, weights: Vec<u8>, device: &Device) -> Result<Vit, Error> {
        // At least 2 bytes per value (f16/bf16): a config describing more values than the
        // file can hold is refused before the model is allocated.
        let needed = self.parameter_count().saturating_mul(2);
        if needed > weights.len() as u64 {
            return Err(Error::Weights(format!(
                "config.json describes {} parameters, more than model.safetensors ({} bytes) can hold",
                self.parameter_count(),
                weights.len()
            )));
        }
        let mut model = self.init(device);
        let remap = KeyRemapper::new()
            .add_pattern(r"^dinov2\.", "")
            .and_then(|r| r.add_pattern(r"attention\.attention\.query\.", "attention.q_proj."))
            .and_then(|r| r.add_pattern(r"attention\.attention\.key\.", "attention.k_proj."))
            .and_then(|r| r.add_pattern(r"attention\.attention\.value\.", "attention.v_proj."))
            .and_then(|r| r.add_pattern(r"attention\.output\.dense\.", "attention.o_proj."))
            .map_err(|e| Error::Weights(format!("key remap: {e}")))?;
        let mut store = SafetensorsStore::from_bytes(Some(weights))
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remap)
            .allow_partial(true)
            .validate(false); // mismatches are reported by `check_applied`, concisely
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::Weights(format!("model.safetensors: {e}")))?;
        super::weights::check_applied(&result, "model.safetensors", "config.json", false)?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid config.json with `extra` (a JSON object's fields) replacing or
    /// adding fields.
    fn config(extra: &str) -> String {
        let mut c = serde_json::json!({"hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "patch_size": 14, "image_size": 56});
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    }

    /// Sizes that would allocate before any weight is read are refused, with the field.
    #[test]
    fn config_sizes_are_checked_before_allocation() {
        assert!(VitConfig::from_json(&config("")).is_ok());
        for (extra, field) in [
            (r#""num_channels": 1"#, "num_channels"),
            (r#""num_channels": 4"#, "num_channels"),
            (
                r#""hidden_size": 1000000000, "num_attention_heads": 1"#,
                "hidden_size",
            ),
            (r#""num_hidden_layers": 100000"#, "num_hidden_layers"),
            (r#""mlp_ratio": 1e12"#, "mlp_ratio"),
            (r#""image_size": 1000000"#, "image_size"),
            (r#""num_register_tokens": 100000"#, "num_register_tokens"),
            (r#""layer_norm_eps": -1"#, "layer_norm_eps"),
        ] {
            let err = VitConfig::from_json(&config(extra))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
    }

    /// A config describing more parameters than the weights file can hold is refused
    /// before the model is built.
    #[test]
    fn config_larger_than_its_weights_is_refused() {
        let c = VitConfig::from_json(&config(
            r#""hidden_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 96"#,
        ))
        .unwrap();
        assert!(c.parameter_count() > 10_000_000_000);
        let err = c
            .load(vec![0u8; 1024], &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than model.safetensors"), "{err}");
    }
}
