//! Each fast path against Burn's own operations (and `erf`/`exp` against f64 references).

use super::activation::*;
use super::conv::*;
use super::fused::*;
use super::linear::*;
use super::window::*;
use burn::nn::PaddingConfig2d;
use burn::tensor::Tensor;
use burn::tensor::activation;

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

        let shortcut = Tensor::<3>::random([b, h * w, c], Distribution::Normal(0.0, 1.0), &device);
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
