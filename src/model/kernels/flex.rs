//! Moving between Burn tensors and the flex backend's f32 storage; which tensors the fast
//! paths take.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::{Bytes, DType, Shape, Tensor};

use super::activation::*;

/// Whether the fast paths apply: f32 data on the flex backend.
pub(super) fn on_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && matches!(x.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// `y (+ residual)`, then GELU when `then_gelu`: the fallbacks' epilogue with Burn's ops.
pub(super) fn add_then_gelu<const D: usize>(
    y: Tensor<D>,
    residual: Option<Tensor<D>>,
    then_gelu: bool,
) -> Tensor<D> {
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    if then_gelu { gelu(y) } else { y }
}

/// `f` applied to tokens `x [B, H*W, C]` seen as an image `[B, C, H, W]`, its result
/// `[B, C', H', W']` turned back into tokens `[B, H'*W', C']` (the token paths' fallback).
pub(super) fn on_image(
    x: Tensor<3>,
    h: usize,
    w: usize,
    f: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Tensor<3> {
    let [b, _, c] = x.dims();
    let y = f(x.swap_dims(1, 2).reshape([b, c, h, w]));
    let [b, c_out, h_out, w_out] = y.dims();
    y.reshape([b, c_out, h_out * w_out]).swap_dims(1, 2)
}

/// The flex primitive of a float tensor whose device was checked to be flex.
pub(super) fn primitive<const D: usize>(t: Tensor<D>) -> FlexTensor {
    match t.try_into_primitive::<Flex>() {
        Ok(t) => t,
        // Unreachable: callers check the device (a model's parameters live on its device).
        Err(e) => panic!("flex tensor on a flex device: {e:?}"),
    }
}

/// [`primitive`], laid out contiguously (a copy only for a strided view).
pub(super) fn contiguous<const D: usize>(t: Tensor<D>) -> FlexTensor {
    primitive(t).to_contiguous()
}

/// The values of a contiguous f32 flex tensor.
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    match t.as_slice::<f32>() {
        Some(v) => v,
        // Unreachable: callers pass contiguous tensors whose dtype they checked to be f32.
        None => panic!("contiguous f32 flex tensor expected"),
    }
}

/// A flex tensor of `shape` holding `values` row-major.
pub(super) fn from_values<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    let t = FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    );
    Tensor::from_primitive::<Flex>(t)
}
