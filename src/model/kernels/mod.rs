//! CPU kernels: fast paths for Burn's CPU backend (flex) where burn-flex 0.22.1 is slow; every other
//! device gets Burn's own operation.
//!
//! burn-flex computes elementwise operations on one thread, and GELU with libm's scalar
//! `erff` per element: 183 ms on a `[1,256,256,256]` tensor, the size of TinyViT's first
//! stage, where the encoder applies it four times (docs/benchmarks-history.md, "Where the encoder's time
//! goes"). Here GELU runs in place on the tensor's own storage (no copy when the tensor is
//! not shared), with a branch-free rational `erf` the compiler vectorises, split over the
//! CPU threads where the platform has them. GELU's and softmax's loops are compiled once
//! per instruction set and chosen at run time (`macerator`: AVX-512 or AVX2 on x86-64,
//! NEON, SIMD128 in wasm); the baseline x86-64 target alone would give SSE2 without FMA
//! (GELU 9.3 -> 3.5 ms on `[1,256,256,256]` on this project's AVX-512 machine).
//!
//! The model calls the functions re-exported here; each chooses its fast path (flex
//! backend, f32, the shapes it handles) or Burn's own operation, so the model files read
//! like the paper. By concern: [`activation`], [`conv`], [`window`], [`linear`], with
//! [`parallel`] (threads, shared outputs) and [`flex`] (storage access) beneath them.

mod activation;
mod conv;
mod flex;
mod fused;
mod linear;
pub(crate) mod parallel;
mod window;

pub(crate) use activation::{gelu, softmax};
pub(crate) use conv::{conv1x1, conv1x1_tokens, depthwise_conv3x3, depthwise_conv3x3_tokens};
pub(crate) use fused::{mbconv, patch_merging};
pub(crate) use linear::{linear, linear_add, linear_gelu};

pub(crate) use window::{window_attention, window_partition, window_reverse_add};

#[cfg(test)]
mod tests;
