//! Fast paths for Burn's CPU backend (flex) where burn-flex 0.22.1 is slow; every other
//! device gets Burn's own operation.
//!
//! burn-flex computes elementwise operations on one thread, and GELU with libm's scalar
//! `erff` per element: 183 ms on a `[1,256,256,256]` tensor, the size of TinyViT's first
//! stage, where the encoder applies it four times (BENCHMARKS.md, "Where the encoder's time
//! goes"). Here GELU runs in place on the tensor's own storage (no copy when the tensor is
//! not shared), with a branch-free rational `erf` the compiler vectorises (SSE2 natively,
//! SIMD128 in wasm), split over the CPU threads where the platform has them.

use std::sync::OnceLock;

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::activation;
use burn::tensor::{Bytes, DType, Tensor};

/// Elements below which splitting over threads costs more than it saves.
const MIN_PER_THREAD: usize = 1 << 16;

/// Exact GELU, `x * Φ(x) = 0.5 x (1 + erf(x / √2))`, as `burn::tensor::activation::gelu`
/// (and PyTorch's `nn.GELU()`), for any shape. Same shape out; on the flex backend with f32
/// data computed by [`erf`] (max |Δ| to libm's `erff` below 1e-6, see the tests).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 || !matches!(x.device().as_dispatch(), DispatchDevice::Flex(_)) {
        return activation::gelu(x);
    }
    let t = match x.try_into_primitive::<Flex>() {
        Ok(t) => t,
        // Unreachable: the device and dtype were checked above.
        Err(e) => panic!("flex tensor on a flex device: {e:?}"),
    };
    Tensor::from_primitive::<Flex>(map_f32(t, gelu_slice))
}

/// Applies `f` to every value of an f32 tensor: in place when the tensor owns its storage
/// contiguously from offset 0 (the usual case: a fresh op output), else into a new
/// contiguous tensor.
fn map_f32(mut t: FlexTensor, f: fn(&mut [f32])) -> FlexTensor {
    let n = t.layout().num_elements();
    let in_place = t.is_unique() && t.layout().contiguous_offsets() == Some((0, n));
    if in_place && let Some(storage) = t.try_storage_mut::<f32>() {
        par_chunks(&mut storage[..n], f);
        return t;
    }
    let shape = t.layout().shape().clone();
    let c = t.to_contiguous();
    let mut values = match c.as_slice::<f32>() {
        Some(s) => s.to_vec(),
        // Unreachable: `to_contiguous` returns a contiguous f32 tensor.
        None => panic!("to_contiguous gave a non-contiguous tensor"),
    };
    par_chunks(&mut values, f);
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// CPU threads for these kernels: `RAYON_NUM_THREADS` when set (the same count the flex
/// backend's rayon pool uses), else the platform's parallelism; 1 where threads cannot be
/// spawned (wasm32 without threads reports no parallelism).
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
    })
}

/// Runs `f` over `data` split into one contiguous part per thread (this thread takes the
/// first part).
fn par_chunks(data: &mut [f32], f: fn(&mut [f32])) {
    let parts = threads().min(data.len() / MIN_PER_THREAD).max(1);
    if parts == 1 {
        f(data);
        return;
    }
    let chunk = data.len().div_ceil(parts);
    std::thread::scope(|s| {
        let mut chunks = data.chunks_mut(chunk);
        let first = chunks.next();
        for c in chunks {
            s.spawn(move || f(c));
        }
        if let Some(c) = first {
            f(c);
        }
    });
}

fn gelu_slice(values: &mut [f32]) {
    for v in values {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` for f32 as a branch-free rational function, `x P(x²) / Q(x²)` on `x` clamped to
/// [-4, 4] (beyond which erf rounds to ±1 in f32). The coefficients are XLA's and Eigen's
/// (`ErfImpl32`, `generic_fast_erf_float`); NaN stays NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for a in &ALPHA[1..] {
        p = p * x2 + a;
    }
    let mut q = BETA[0];
    for b in &BETA[1..] {
        q = q * x2 + b;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

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
}
