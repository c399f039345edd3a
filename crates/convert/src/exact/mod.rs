//! LiteMedSAM's forward pass in a fixed order of f32 operations, for the weight conversion.
//!
//! The conversion measures the fp32 model on calibration images (each encoder layer's mean
//! output, each 4-bit decoder layer's input Gram matrix) and turns those measurements
//! into bytes: corrected biases, rounding decisions. The inference kernels
//! ([`medfm::model`]) choose their summation order by the CPU's vector width, FMA and cache
//! sizes (ours, burn-flex's and the `gemm` crate's), so the same conversion run there gave
//! different int8/int4 files on an AVX-512-FP16 machine than on this project's. Here every
//! value is computed in one documented order ([`ops`]), so the files are bit-identical on
//! every x86-64 and ARM CPU, whatever its vector width or thread count.
//!
//! The pass reads the model's parameters as plain arrays ([`Params`], by Burn path name),
//! mirrors the Burn model component by component (same upstream files: `tiny_vit_sam.py`,
//! `prompt_encoder.py`, `transformer.py`, `mask_decoder.py`), and lets an [`Observer`] see
//! (and, for bias correction, change) layer outputs and inputs. It is slower than the
//! inference path and only runs inside `medfm weights fetch` and the tests; its results
//! agree with the Burn model and with the PyTorch reference to the parity tolerances
//! (`tests/weights.rs`).

pub mod decoder;
pub mod encoder;
pub mod ops;

use std::collections::HashMap;

use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::DType;

use medfm::model::{Error, Sam};

/// One parameter: shape and row-major values.
#[derive(Debug, Clone)]
pub struct Param {
    /// Shape, as in the Burn module (Linear weights `[in, out]`, convolutions
    /// `[out, in / groups, kh, kw]`).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// Every parameter of a LiteMedSAM model by Burn path name
/// (`image_encoder.layer1.blocks.0.attn.qkv.weight`), in the module's order.
#[derive(Debug, Clone)]
pub struct Params {
    names: Vec<String>,
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl Params {
    /// The parameters of `model` (f32; a quantized parameter is refused).
    pub fn of(model: &Sam) -> Result<Self, Error> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        for t in model.collect(None, None, false) {
            let data = bridge::to_data(&t)
                .map_err(|e| Error::Weights(format!("cannot read `{}`: {e}", t.name)))?;
            if matches!(data.dtype(), DType::QFloat(_)) {
                return Err(Error::Weights(format!(
                    "`{}` is quantized: the conversion starts from f32 parameters",
                    t.name
                )));
            }
            let values = data
                .convert_dtype(DType::F32)
                .try_into_vec::<f32>()
                .map_err(|e| Error::Weights(format!("`{}` is not f32: {e:?}", t.name)))?;
            names.push(t.name.clone());
            params.push(Param {
                shape: t.shape.to_vec(),
                values,
            });
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(Self {
            names,
            params,
            index,
        })
    }

    /// The parameter called `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Param, Error> {
        self.index
            .get(name)
            .map(|&i| &self.params[i])
            .ok_or_else(|| Error::Weights(format!("parameter `{name}` is missing")))
    }

    /// The parameter called `name`, to change it.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut Param, Error> {
        match self.index.get(name) {
            Some(&i) => Ok(&mut self.params[i]),
            None => Err(Error::Weights(format!("parameter `{name}` is missing"))),
        }
    }

    /// Whether a parameter called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every parameter with its name, in the module's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Param)> {
        self.names.iter().map(String::as_str).zip(&self.params)
    }

    /// Values of `name` with the expected shape, or an error naming both shapes.
    pub(crate) fn values(&self, name: &str, shape: &[usize]) -> Result<&[f32], Error> {
        let p = self.get(name)?;
        if p.shape != shape {
            return Err(Error::Weights(format!(
                "parameter `{name}` has shape {:?}, expected {shape:?}",
                p.shape
            )));
        }
        Ok(&p.values)
    }
}

/// What the conversion watches in a pass.
pub trait Observer {
    /// Output rows `out [rows, n]` of a biased layer of the encoder's stages 1-3 (each
    /// TinyViT Linear layer and the 1x1 convolutions of the patch mergings that follow
    /// them: what bias correction covers), computed for every image of the batch, before
    /// any activation; `layer` is the weight's path without `.weight`. The observer may
    /// change them (the pass continues with what it leaves).
    fn encoder_output(&mut self, layer: &str, out: &mut [f32], n: usize) -> Result<(), Error> {
        let _ = (layer, out, n);
        Ok(())
    }

    /// Input rows `x [rows, k]` of a mask-decoder Linear layer, as the layer receives them.
    fn decoder_input(&mut self, layer: &str, x: &[f32], k: usize) {
        let _ = (layer, x, k);
    }
}

/// An observer that watches nothing.
pub struct NoObserver;

impl Observer for NoObserver {}
