//! The storage format: symmetric blocks with searched scales, as Burn quantized tensors.

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, TensorData};

use medfm::model::Error;

/// Bits per quantized value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    /// Symmetric 8-bit, -127..=127.
    Q8,
    /// Symmetric 4-bit, -7..=7, packed eight per `u32`.
    Q4,
}

impl Bits {
    /// Largest quantized magnitude.
    pub fn qmax(self) -> f32 {
        match self {
            Bits::Q8 => 127.0,
            Bits::Q4 => 7.0,
        }
    }

    fn value(self) -> QuantValue {
        match self {
            Bits::Q8 => QuantValue::Q8S,
            Bits::Q4 => QuantValue::Q4S,
        }
    }
}

/// How one tensor is quantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Bits per value.
    pub bits: Bits,
    /// Block extent over the tensor's trailing dimensions (Burn's `BlockSize`); leading
    /// dimensions not named have extent 1.
    pub block: Vec<u8>,
    /// Rounded with GPTQ error feedback over the layer's calibration inputs
    /// ([`crate::gptq`]; Linear weights only) instead of to nearest.
    pub gptq: bool,
}

impl Rule {
    /// `bits` per value in blocks of `block` (trailing dimensions), rounded to nearest.
    pub fn new(bits: Bits, block: &[u8]) -> Self {
        Self {
            bits,
            block: block.to_vec(),
            gptq: false,
        }
    }

    /// The same rule, rounded with GPTQ error feedback.
    pub fn gptq(self) -> Self {
        Self { gptq: true, ..self }
    }
}

/// Which parameters are quantized and how: `(path, shape) -> Some(rule)`, `None` keeps f32.
pub type Plan<'a> = &'a dyn Fn(&str, &[usize]) -> Option<Rule>;

/// Clip candidates, as fractions of a block's largest magnitude: the scale of a block is
/// `clip * max|w| / qmax` for the candidate with the smallest squared error.
pub const CLIP_STEPS: [f32; 11] = [
    1.0, 0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.8, 0.75, 0.7, 0.65,
];

/// Scale dtype of every quantized tensor. Scales are rounded up onto the f16 grid before
/// the values are rounded, so the stored scale is the one the values were rounded with.
const SCALE_DTYPE: ScaleDtype = ScaleDtype::F16;
/// Smallest positive f16 (2^-24): the smallest scale [`SCALE_DTYPE`] stores.
const MIN_SCALE: f32 = 5.960_464_5e-8;
// `to_tensor_data` writes the 4-bit tensors' scales as f16 itself.
const _: () = assert!(matches!(SCALE_DTYPE, ScaleDtype::F16));

/// Block layout of a tensor: per dimension its extent, its block extent, the number of
/// blocks. Errors when the block does not tile the shape.
struct Blocks {
    shape: Vec<usize>,
    block: Vec<usize>,
    counts: Vec<usize>,
}

impl Blocks {
    fn new(shape: &[usize], block: &[u8]) -> Result<Self, Error> {
        if block.len() > shape.len() || block.contains(&0) {
            return Err(Error::Weights(format!(
                "block {block:?} does not fit a tensor of shape {shape:?}"
            )));
        }
        let mut full = vec![1usize; shape.len()];
        let start = shape.len() - block.len();
        for (i, &b) in block.iter().enumerate() {
            full[start + i] = b as usize;
        }
        if shape.iter().zip(&full).any(|(s, b)| s % b != 0) {
            return Err(Error::Weights(format!(
                "block {block:?} does not tile a tensor of shape {shape:?}"
            )));
        }
        let counts = shape.iter().zip(&full).map(|(s, b)| s / b).collect();
        Ok(Self {
            shape: shape.to_vec(),
            block: full,
            counts,
        })
    }

    fn num_blocks(&self) -> usize {
        self.counts.iter().product()
    }

    /// Row-major block index of every element (the same order as Burn's `BlockLayout`).
    fn block_index(&self) -> Vec<u32> {
        let n: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let dims = self.shape.len();
        let mut coord = vec![0usize; dims];
        for _ in 0..n {
            let b = coord
                .iter()
                .zip(&self.block)
                .zip(&self.counts)
                .fold(0, |b, ((c, k), n)| b * n + c / k);
            out.push(b as u32);
            for d in (0..dims).rev() {
                coord[d] += 1;
                if coord[d] < self.shape[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        out
    }
}

/// A quantized tensor on the host: values in `-qmax..=qmax`, one scale per block.
#[derive(Debug)]
pub struct QTensor {
    /// Quantized values, row-major.
    pub values: Vec<i8>,
    /// Per-block scales, row-major over the block grid.
    pub scales: Vec<f32>,
    /// Index of each value's block.
    block_of: Vec<u32>,
}

impl QTensor {
    /// The rows `[1, N]` of a `[K, N]` tensor, each quantized with blocks along `N`, as
    /// one tensor (its block grid row-major, as [`quantize_values`] lays it out).
    pub(crate) fn stack_rows(rows: Vec<QTensor>) -> Self {
        let mut out = QTensor {
            values: Vec::new(),
            scales: Vec::new(),
            block_of: Vec::new(),
        };
        for row in rows {
            let offset = out.scales.len() as u32;
            out.values.extend(row.values);
            out.block_of.extend(row.block_of.iter().map(|b| b + offset));
            out.scales.extend(row.scales);
        }
        out
    }

    /// The f32 values the quantized tensor stands for (`value * scale`, as Burn dequantizes).
    pub fn dequantize(&self) -> Vec<f32> {
        self.values
            .iter()
            .zip(&self.block_of)
            .map(|(&q, &b)| self.scales[b as usize] * q as f32)
            .collect()
    }
}

/// Quantize `values` of `shape` by `rule`, each block's scale searched over [`CLIP_STEPS`].
pub fn quantize_values(values: &[f32], shape: &[usize], rule: &Rule) -> Result<QTensor, Error> {
    if values.len() != shape.iter().product::<usize>() {
        return Err(Error::Weights(format!(
            "{} values do not fill a tensor of shape {shape:?}",
            values.len()
        )));
    }
    let blocks = Blocks::new(shape, &rule.block)?;
    if rule.bits == Bits::Q4 && shape.last().is_none_or(|d| d % 8 != 0) {
        return Err(Error::Weights(format!(
            "4-bit values are packed eight per word along the last dimension; shape {shape:?}"
        )));
    }
    let block_of = blocks.block_index();
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); blocks.num_blocks()];
    for (&v, &b) in values.iter().zip(&block_of) {
        members[b as usize].push(v);
    }
    let qmax = rule.bits.qmax();
    let scales: Vec<f32> = members
        .iter()
        .map(|m| best_scale(m, qmax))
        .collect::<Result<_, _>>()?;
    let values = values
        .iter()
        .zip(&block_of)
        .map(|(&v, &b)| round(v, scales[b as usize], qmax))
        .collect();
    Ok(QTensor {
        values,
        scales,
        block_of,
    })
}

fn round(v: f32, scale: f32, qmax: f32) -> i8 {
    (v / scale).round().clamp(-qmax, qmax) as i8
}

/// The scale among the clip candidates with the smallest squared error over `block`.
fn best_scale(block: &[f32], qmax: f32) -> Result<f32, Error> {
    if block.iter().any(|v| !v.is_finite()) {
        return Err(Error::Weights("a weight is not finite".into()));
    }
    let peak = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak == 0.0 {
        // Any positive scale represents zeros exactly.
        return Ok(1.0);
    }
    let candidates = CLIP_STEPS.iter().map(|clip| {
        // On the f16 grid, and never below its smallest positive value.
        let scale = SCALE_DTYPE.round_up(clip * peak / qmax).max(MIN_SCALE);
        let err: f32 = block
            .iter()
            .map(|&v| {
                let d = v - scale * round(v, scale, qmax) as f32;
                d * d
            })
            .sum();
        (err, scale)
    });
    let (_, scale) = candidates
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("CLIP_STEPS is not empty");
    Ok(scale)
}

/// Burn quantized tensor data holding `q` (shape `shape`, quantized by `rule`).
pub fn to_tensor_data(q: &QTensor, shape: &[usize], rule: &Rule) -> TensorData {
    let scheme = QuantScheme::default()
        .with_value(rule.bits.value())
        .per_block(&rule.block, SCALE_DTYPE);
    match rule.bits {
        Bits::Q8 => TensorData::quantized(
            q.values.clone(),
            shape.to_vec(),
            scheme.with_store(QuantStore::Native),
            &q.scales,
            None,
        ),
        Bits::Q4 => {
            // Eight 4-bit values per u32, lowest bits first, over the flattened tensor
            // (burn-std's `unpack_q_to_i8s`), then the scales, as `QuantizedBytes` lays
            // them out. [`quantize_values`] only gives 4 bits to tensors whose innermost
            // dimension is a multiple of 8, where flat and per-row packing agree.
            let mut bytes = Vec::with_capacity(q.values.len() / 2 + 4 * q.scales.len());
            for word in q.values.chunks(8) {
                let packed = word
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &v)| acc | ((v as u32 & 0xF) << (4 * i)));
                bytes.extend_from_slice(&packed.to_le_bytes());
            }
            for s in &q.scales {
                bytes.extend_from_slice(&burn::tensor::f16::from_f32(*s).to_le_bytes());
            }
            TensorData::from_bytes_vec(
                bytes,
                shape.to_vec(),
                DType::QFloat(scheme.with_store(QuantStore::PackedU32(0))),
            )
        }
    }
}
