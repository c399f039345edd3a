//! From a decoded frame to a mask: preprocessing, the model calls, postprocessing.
//!
//! [`Segmenter`] holds the model and a device and caches the embedding of the last
//! frame it encoded, so a viewer's prompt changes cost only a decode.

pub mod device;
pub mod embed;
pub mod preprocess;
pub mod propagate;
pub mod session;

use burn::tensor::{Device, Tensor, TensorData};

use crate::dicom::{self, DicomImage};
use crate::model::{self, Embedding, PointPrompt, Prompts, Sam};
pub use preprocess::{Preprocessed, mask_from_logits, preprocess, upsample_logits, vit_input};

/// Errors of the pipeline layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or decoding the DICOM input failed.
    #[error(transparent)]
    Dicom(#[from] dicom::Error),
    /// The model refused its input or weights.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// The image cannot be segmented as it is.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// A prompt is outside the image or malformed.
    #[error("prompt: {0}")]
    Prompt(String),
    /// An embedding index that cannot be read or extended.
    #[error("index: {0}")]
    Index(String),
    /// The device failed (a GPU readback, a lost device).
    #[error("device: {0}")]
    Device(String),
}

impl Error {
    /// The kind of the failure (exit code, JS `code`): DICOM and prompts are bad input,
    /// model errors by their own kind, devices are devices.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Dicom(e) => e.kind(),
            Error::Model(e) => e.kind(),
            Error::Unsupported(_) | Error::Prompt(_) | Error::Index(_) => {
                crate::ErrorKind::BadInput
            }
            Error::Device(_) => crate::ErrorKind::Device,
        }
    }
}

/// A point's label as users give it (the CLI's `--point X,Y,LABEL`, the JS API's
/// `[x, y, label]`): 1 foreground, 0 background; anything else is refused, never rounded.
pub fn point_label(label: f32) -> Result<bool, Error> {
    if label == 1.0 {
        Ok(true)
    } else if label == 0.0 {
        Ok(false)
    } else {
        Err(Error::Prompt(format!(
            "point label {label}: use 1 (foreground) or 0 (background)"
        )))
    }
}

/// A prompt in original image pixel coordinates (columns x, rows y).
#[derive(Debug, Clone, Default)]
pub struct PixelPrompt {
    /// Box `[x0, y0, x1, y1]`, corners inclusive.
    pub bbox: Option<[f32; 4]>,
    /// Points `(x, y, positive)`.
    pub points: Vec<(f32, f32, bool)>,
    /// Return the three multimask outputs.
    pub multimask: bool,
}

impl PixelPrompt {
    /// Check the prompt against an image of `rows x cols` and map it to model space.
    pub fn to_model(&self, pre: &Preprocessed) -> Result<Prompts, Error> {
        let (w, h) = (pre.cols as f32, pre.rows as f32);
        let inside = |x: f32, y: f32| {
            x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0 && x < w && y < h
        };
        if self.bbox.is_none() && self.points.is_empty() {
            return Err(Error::Prompt("give a box or at least one point".into()));
        }
        if let Some([x0, y0, x1, y1]) = self.bbox {
            if !(x1 > x0 && y1 > y0) {
                return Err(Error::Prompt(format!(
                    "box {x0},{y0},{x1},{y1} is empty: it needs x0 < x1 and y0 < y1"
                )));
            }
            if !inside(x0, y0) || !inside(x1, y1) {
                return Err(Error::Prompt(format!(
                    "box {x0},{y0},{x1},{y1} is outside the {}x{} image (columns 0..{}, rows 0..{})",
                    pre.cols,
                    pre.rows,
                    pre.cols - 1,
                    pre.rows - 1
                )));
            }
        }
        for &(x, y, _) in &self.points {
            if !inside(x, y) {
                return Err(Error::Prompt(format!(
                    "point {x},{y} is outside the {}x{} image",
                    pre.cols, pre.rows
                )));
            }
        }
        Ok(Prompts {
            bbox: self.bbox.map(|b| b.map(|v| pre.to_model(v))),
            points: self
                .points
                .iter()
                .map(|&(x, y, positive)| PointPrompt {
                    x: pre.to_model(x),
                    y: pre.to_model(y),
                    positive,
                })
                .collect(),
            mask: None,
            multimask: self.multimask,
        })
    }
}

/// Predicted IoU below which a mask is low-confidence. On such prompts most of the mask's
/// logits sit near 0, so the mask moves with small changes of the weights: int8 / int4
/// masks differ from fp32 ones by 2-3% there on the parity prompts and more on other
/// images (README, "Margins"), against under 1.2% on confident prompts
/// (`tests/weights.rs`).
pub const CONFIDENT_IOU: f32 = 0.9;

/// The result of one prompt, in original image space.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// Mask (0/1) per pixel, `rows * cols`, row-major; the best mask when multimask.
    pub mask: Vec<u8>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Pixels in the mask.
    pub area: usize,
    /// Predicted IoU of each returned mask.
    pub iou: Vec<f32>,
    /// Index of the mask in `mask` among the returned ones (highest predicted IoU).
    pub chosen: usize,
    /// Low-res logits of every returned mask, `M x 256 x 256`.
    pub low_res_logits: Vec<f32>,
    /// Milliseconds of the decoder call, its outputs read back to the host included (what
    /// a peer's decoder session returns).
    pub decode_ms: f64,
    /// Milliseconds of the postprocessing after it (upsampling to `rows x cols`,
    /// threshold, area).
    pub post_ms: f64,
}

impl Segmentation {
    /// Predicted IoU of the chosen mask.
    pub fn predicted_iou(&self) -> f32 {
        self.iou.get(self.chosen).copied().unwrap_or(0.0)
    }

    /// Whether the chosen mask's predicted IoU is below [`CONFIDENT_IOU`] (a NaN counts as
    /// low).
    pub fn low_confidence(&self) -> bool {
        let iou = self.predicted_iou();
        iou.is_nan() || iou < CONFIDENT_IOU
    }
}

/// Model + device: preprocess, embed once, decode per prompt.
pub struct Segmenter {
    /// The model.
    pub sam: Sam,
    /// Its device.
    pub device: Device,
}

/// Read a tensor back as `Vec<f32>` with a clear error.
pub fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, Error> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(readback_error)
}

fn readback_error(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("cannot read a result back from the device: {e:?}"))
}

impl Segmenter {
    /// Wrap a loaded model.
    pub fn new(sam: Sam, device: Device) -> Self {
        Self { sam, device }
    }

    /// Decode a frame of a DICOM image and preprocess it.
    pub fn prepare(&self, image: &DicomImage, frame: u32) -> Result<Preprocessed, Error> {
        let f = image.frame(frame)?;
        preprocess(&f, &image.meta)
    }

    /// Run the encoder on a preprocessed frame: `-> Embedding [1, 256, 64, 64]`.
    pub fn embed(&self, pre: &Preprocessed) -> Result<Embedding, Error> {
        let s = model::sam::INPUT_SIZE;
        let x = Tensor::<4>::from_data(
            TensorData::new(pre.pixels.clone(), [1, 3, s, s]),
            &self.device,
        );
        Ok(self.sam.embed(x)?)
    }

    /// Decode a prompt against an embedding and postprocess to the image size.
    pub fn segment(
        &self,
        emb: &Embedding,
        pre: &Preprocessed,
        prompt: &PixelPrompt,
    ) -> Result<Segmentation, Error> {
        let t = web_time::Instant::now();
        let out = self.decode(emb, pre, prompt)?;
        let iou = tensor_to_vec(out.iou)?;
        let logits = tensor_to_vec(out.low_res_logits)?;
        Ok(finish(pre, iou, logits, ms_since(t)))
    }

    /// [`Segmenter::segment`] with asynchronous readback, for devices (WebGPU in a
    /// browser) that cannot block on the GPU.
    pub async fn segment_async(
        &self,
        emb: &Embedding,
        pre: &Preprocessed,
        prompt: &PixelPrompt,
    ) -> Result<Segmentation, Error> {
        let t = web_time::Instant::now();
        let out = self.decode(emb, pre, prompt)?;
        let iou = tensor_to_vec_async(out.iou).await?;
        let logits = tensor_to_vec_async(out.low_res_logits).await?;
        Ok(finish(pre, iou, logits, ms_since(t)))
    }

    /// The model call of a prompt: `low_res_logits [1, M, 256, 256]`, `iou [1, M]`
    /// (M = 1, or 3 with multimask), still on the device.
    pub fn decode(
        &self,
        emb: &Embedding,
        pre: &Preprocessed,
        prompt: &PixelPrompt,
    ) -> Result<model::Decoded, Error> {
        let prompts = prompt.to_model(pre)?;
        Ok(self.sam.decode(emb, &prompts)?)
    }
}

/// Read a tensor back as `Vec<f32>` without blocking (WebGPU readbacks are asynchronous).
pub async fn tensor_to_vec_async<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, Error> {
    let data = t.into_data_async().await.map_err(readback_error)?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(readback_error)
}

fn ms_since(t: web_time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Postprocess the read-back decoder outputs: pick the mask with the highest predicted
/// IoU, upsample its logits to `rows x cols` and threshold.
fn finish(pre: &Preprocessed, iou: Vec<f32>, logits: Vec<f32>, decode_ms: f64) -> Segmentation {
    let t = web_time::Instant::now();
    let n = model::sam::LOW_RES_SIZE * model::sam::LOW_RES_SIZE;
    let chosen = iou
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let mask = mask_from_logits(&logits[chosen * n..(chosen + 1) * n], pre);
    let area = mask.iter().map(|&m| m as usize).sum();
    Segmentation {
        mask,
        rows: pre.rows,
        cols: pre.cols,
        area,
        iou,
        chosen,
        low_res_logits: logits,
        decode_ms,
        post_ms: ms_since(t),
    }
}

/// An RGB picture for reviewing a mask: the model input (channel 0, nearest-neighbour
/// upsampled back to `rows x cols`) in grey, the mask blended in red; `rows * cols * 3`
/// bytes. For display only: the model input is the clipped, resized image.
pub fn overlay_rgb(pre: &Preprocessed, mask: &[u8]) -> Vec<u8> {
    let s = model::sam::INPUT_SIZE;
    // Nearest lookup into the unpadded model input (channel 0).
    let mut out = Vec::with_capacity(pre.rows * pre.cols * 3);
    for y in 0..pre.rows {
        let sy = ((y as f32 + 0.5) * pre.scale) as usize;
        for x in 0..pre.cols {
            let sx = ((x as f32 + 0.5) * pre.scale) as usize;
            let g = pre.pixels[sy.min(s - 1) * s + sx.min(s - 1)] * 255.0;
            let m = mask[y * pre.cols + x] > 0;
            let (r, gg, b) = if m {
                (0.5 * g + 127.5, 0.5 * g, 0.5 * g)
            } else {
                (g, g, g)
            };
            out.extend_from_slice(&[r as u8, gg as u8, b as u8]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_iou(iou: Vec<f32>, chosen: usize) -> Segmentation {
        Segmentation {
            mask: vec![],
            rows: 0,
            cols: 0,
            area: 0,
            iou,
            chosen,
            low_res_logits: vec![],
            decode_ms: 0.0,
            post_ms: 0.0,
        }
    }

    /// The chosen mask's predicted IoU decides; 0.9 itself is confident; NaN is not.
    #[test]
    fn low_confidence_is_below_the_threshold_of_the_chosen_mask() {
        assert!(!with_iou(vec![CONFIDENT_IOU], 0).low_confidence());
        assert!(with_iou(vec![0.89], 0).low_confidence());
        assert!(!with_iou(vec![0.5, 0.95, 0.7], 1).low_confidence());
        assert!(with_iou(vec![0.95, 0.5, 0.7], 1).low_confidence());
        assert!(with_iou(vec![f32::NAN], 0).low_confidence());
        assert!(with_iou(vec![], 0).low_confidence());
    }
}
