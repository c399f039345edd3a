//! Small building blocks shared by the LiteMedSAM components.
//!
//! Mirrors `segment_anything/modeling/common.py` (`LayerNorm2d`, `MLPBlock`) and the
//! `MLP` of `mask_decoder.py`, plus the fused `Conv2d_BN` of `tiny_vit_sam.py`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::kernels::{conv1x1, conv1x1_tokens, depthwise_conv3x3, depthwise_conv3x3_tokens, gelu};

/// Channel-wise LayerNorm over `[B, C, H, W]` (normalises across C at each pixel).
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    /// Scale, `[C]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[C]`.
    pub bias: Param<Tensor<1>>,
    eps: f64,
}

impl LayerNorm2d {
    /// A LayerNorm2d with `channels` channels, ones/zeros initialised, eps 1e-6 as upstream.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps: 1e-6,
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.normalize(x, 1)
    }

    /// The same normalisation on channels-last data: `[B, N, C] -> [B, N, C]`.
    pub fn forward_channels_last(&self, x: Tensor<3>) -> Tensor<3> {
        self.normalize(x, 2)
    }

    /// Normalise across axis `dim` (the channels) at every other position, then scale and
    /// shift per channel.
    fn normalize<const D: usize>(&self, x: Tensor<D>, dim: usize) -> Tensor<D> {
        let mut per_channel = [1; D];
        per_channel[dim] = x.dims()[dim];
        let u = x.clone().mean_dim(dim);
        let d = x - u;
        let s = d.clone().square().mean_dim(dim);
        let x = d / (s + self.eps).sqrt();
        x * self.weight.val().reshape(per_channel) + self.bias.val().reshape(per_channel)
    }
}

/// A convolution whose BatchNorm has been folded into its weight and bias at import.
///
/// Upstream `Conv2d_BN` is `Sequential(c: Conv2d(bias=False), bn: BatchNorm2d)`; the
/// importer (`weights.rs`) folds `bn` into `c`, so only `c` (with bias) exists here. The
/// arithmetic is the same as upstream's own `Conv2d_BN.fuse()`.
#[derive(Module, Debug)]
pub struct Conv2dBn {
    /// The fused convolution.
    pub c: Conv2d,
}

/// Configuration of a [`Conv2dBn`].
#[derive(Config, Debug)]
pub struct Conv2dBnConfig {
    /// Input channels.
    pub d_in: usize,
    /// Output channels.
    pub d_out: usize,
    /// Square kernel size.
    #[config(default = 1)]
    pub kernel: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Symmetric zero padding.
    #[config(default = 0)]
    pub pad: usize,
    /// Channel groups (depthwise when equal to the channels).
    #[config(default = 1)]
    pub groups: usize,
}

impl Conv2dBnConfig {
    /// Build the fused convolution.
    pub fn init(&self, device: &Device) -> Conv2dBn {
        let c = Conv2dConfig::new([self.d_in, self.d_out], [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_padding(PaddingConfig2d::Explicit(
                self.pad, self.pad, self.pad, self.pad,
            ))
            .with_groups(self.groups)
            .with_bias(true)
            .init(device);
        Conv2dBn { c }
    }
}

impl Conv2dBn {
    /// `[B, C_in, H, W] -> [B, C_out, H', W']` (1x1 and depthwise 3x3 ones through the CPU
    /// fast paths `kernels::conv1x1` and `kernels::depthwise_conv3x3` where they apply).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.c.kernel_size == [1, 1] {
            conv1x1(&self.c, x, None, false)
        } else {
            depthwise_conv3x3(&self.c, x, false)
        }
    }

    /// The same convolution on channels-last tokens, then GELU when `then_gelu`:
    /// `[B, H*W, C_in] -> [B, H'*W', C_out]` (1x1 and depthwise 3x3 ones without leaving
    /// that layout: `kernels::conv1x1_tokens`, `kernels::depthwise_conv3x3_tokens`).
    pub fn forward_tokens(&self, x: Tensor<3>, h: usize, w: usize, then_gelu: bool) -> Tensor<3> {
        if self.c.kernel_size == [1, 1] {
            conv1x1_tokens(&self.c, x, then_gelu)
        } else {
            depthwise_conv3x3_tokens(&self.c, x, h, w, then_gelu)
        }
    }

    /// `gelu(conv(x))`, `[B, C_in, H, W] -> [B, C_out, H', W']` (the 1x1 and depthwise
    /// 3x3 fast paths apply GELU to their output while it is in cache).
    pub fn forward_gelu(&self, x: Tensor<4>) -> Tensor<4> {
        if self.c.kernel_size == [1, 1] {
            conv1x1(&self.c, x, None, true)
        } else {
            depthwise_conv3x3(&self.c, x, true)
        }
    }
}

/// Two-layer MLP with an activation between (`MLPBlock` upstream).
#[derive(Module, Debug)]
pub struct MlpBlock {
    /// `dim -> mlp_dim`.
    pub lin1: Linear,
    /// `mlp_dim -> dim`.
    pub lin2: Linear,
    relu: bool,
}

impl MlpBlock {
    /// `dim -> mlp_dim -> dim` with ReLU (`relu = true`) or exact GELU.
    pub fn new(dim: usize, mlp_dim: usize, relu: bool, device: &Device) -> Self {
        Self {
            lin1: LinearConfig::new(dim, mlp_dim).init(device),
            lin2: LinearConfig::new(mlp_dim, dim).init(device),
            relu,
        }
    }

    /// `[.., dim] -> [.., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = self.lin1.forward(x);
        let h = if self.relu { relu(h) } else { gelu(h) };
        self.lin2.forward(h)
    }
}

/// `MLP` of the mask decoder: `num_layers` linear layers, ReLU between them.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The linear layers, in order.
    pub layers: Vec<Linear>,
}

impl Mlp {
    /// `input -> hidden x (num_layers - 1) -> output`.
    pub fn new(
        input: usize,
        hidden: usize,
        output: usize,
        num_layers: usize,
        device: &Device,
    ) -> Self {
        let mut dims = vec![input];
        dims.extend(std::iter::repeat_n(hidden, num_layers - 1));
        dims.push(output);
        let layers = dims
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Self { layers }
    }

    /// `[.., input] -> [.., output]`.
    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = relu(x);
            }
        }
        x
    }
}

/// The same values, laid out contiguously: a strided view (after `swap_dims` or `permute`)
/// is copied once, a contiguous tensor is returned as is (reshaping to one dimension is a
/// view only when the data is already contiguous). Elementwise ops on the CPU backend
/// take their fast path only on contiguous data.
pub fn contiguous<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}
