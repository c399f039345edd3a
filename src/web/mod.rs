//! Browser shell (wasm32 only): the wasm-bindgen facade the Web Worker (`www/worker.js`)
//! drives. It converts types and errors; the work is in `dicom` and `pipeline`.
//!
//! One [`Engine`] per worker holds the opened DICOM images, the model on its device
//! (WebGPU through burn-wgpu, or the CPU backend) and the embedding cache, so a prompt
//! change on an already encoded frame costs one decode. Calls that touch the GPU return
//! promises (WebGPU readbacks are asynchronous); the worker serialises calls.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Float32Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

mod libc_shim;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

use crate::Device;
use crate::dicom::{self, DicomImage, seg::SegmentInfo};
use crate::model::{Embedding, weights};
use crate::pipeline::{self, PixelPrompt, Preprocessed, Segmenter, embed, session::EmbeddingCache};

/// Embeddings kept per worker (4 MiB each): a few frames of scrolling back and forth.
const CACHE_FRAMES: usize = 8;

/// Route Rust panics to the console with their message (instead of a bare
/// "unreachable"), so the worker can report them; runs when the module is initialised.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("medfm panicked: {info}").into());
    }));
    if log::set_logger(&ConsoleLogger).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Warnings and errors of the GPU stack (cubecl, wgpu) on the console: in wasm they are
/// otherwise lost, and a WGSL compilation error is only logged there.
struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let msg = format!(
                "[{}] {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
            if record.level() == log::Level::Error {
                web_sys::console::error_1(&msg.into());
            } else {
                web_sys::console::warn_1(&msg.into());
            }
        }
    }

    fn flush(&self) {}
}

/// Panic on purpose: the browser test checks that a crashed engine is replaced (the
/// page must survive a panic anywhere in the GPU stack).
#[wasm_bindgen(js_name = panicForTest)]
pub fn panic_for_test() {
    panic!("panic requested by the test hook");
}

/// sha256 (hex) of a byte array, as the app checks downloaded weights.
#[wasm_bindgen(js_name = sha256Hex)]
pub fn sha256_hex(bytes: &[u8]) -> String {
    weights::sha256_hex(bytes)
}

/// The pinned sha256 of the LiteMedSAM weights of `precision` (`fp32`, `int8`, `int4`),
/// compiled into this build: the worker checks the server's weights manifest against it,
/// so a swapped manifest and file cannot load other weights.
#[wasm_bindgen(js_name = pinnedSha256)]
pub fn pinned_sha256(precision: &str) -> Result<String, JsError> {
    let p: weights::Precision = precision.parse().map_err(err)?;
    Ok(weights::pinned_sha256(p).to_string())
}

/// Why a WebGPU adapter is a software one (SwiftShader, WARP, a fallback adapter), or
/// undefined for a real GPU: the rule of `pipeline::device`, as natively. `facts`:
/// `{isFallbackAdapter, name, driver}` from the adapter's `GPUAdapterInfo`.
#[wasm_bindgen(js_name = softwareAdapter)]
pub fn software_adapter(facts: JsValue) -> Result<Option<String>, JsError> {
    let facts: pipeline::device::AdapterFacts =
        serde_wasm_bindgen::from_value(facts).map_err(|e| err(format!("adapter facts: {e}")))?;
    Ok(facts.software())
}

/// Parse a DICOM file and return its metadata as a JS object.
#[wasm_bindgen(js_name = dicomInfo)]
pub fn dicom_info(bytes: &[u8]) -> Result<JsValue, JsError> {
    let image = dicom::read(bytes).map_err(err)?;
    to_js(&image.meta)
}

fn err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsError> {
    serde_wasm_bindgen::to_value(v).map_err(err)
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a plain object we created cannot fail.
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

struct Model {
    segmenter: Segmenter,
    backend: &'static str,
}

#[derive(Default)]
struct State {
    images: Vec<Option<DicomImage>>,
    model: Option<Rc<Model>>,
    cache: Option<EmbeddingCache<(u32, u32)>>,
    gpu: Option<Device>,
}

impl State {
    fn image(&self, id: u32) -> Result<&DicomImage, JsError> {
        self.images
            .get(id as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| err(format!("no open image with id {id}")))
    }

    /// The loaded model, shared so that it can be used across an await without holding
    /// the state's borrow.
    fn model(&self) -> Result<Rc<Model>, JsError> {
        self.model
            .clone()
            .ok_or_else(|| err("the model is not loaded yet (call loadModel first)"))
    }

    fn cache(&mut self) -> &mut EmbeddingCache<(u32, u32)> {
        self.cache
            .get_or_insert_with(|| EmbeddingCache::new(CACHE_FRAMES))
    }
}

/// A prompt as the JS API sends it (original pixel coordinates).
#[derive(serde::Deserialize)]
struct Request {
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    #[serde(default)]
    points: Vec<[f32; 3]>,
    #[serde(default)]
    multimask: bool,
}

/// The worker-side engine: images, model, embedding cache.
#[wasm_bindgen]
pub struct Engine {
    state: Rc<RefCell<State>>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl Engine {
    /// An engine with no images and no model.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Engine {
        Engine {
            state: Rc::new(RefCell::new(State::default())),
        }
    }

    /// Load LiteMedSAM from `.bpk` bytes on `backend` (`"webgpu"` or `"cpu"`).
    /// Resolves to the backend name; rejects with the reason when WebGPU cannot be
    /// initialised or the weights are refused. Clears the embedding cache.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, backend: String, weights_bytes: Vec<u8>) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (device, name) = match backend.as_str() {
                "cpu" => (Device::flex(), "cpu"),
                "webgpu" => {
                    let existing = state.borrow().gpu.clone();
                    let device = match existing {
                        Some(d) => d,
                        None => {
                            let d = Device::wgpu_options().init_async().await.map_err(|e| {
                                err(format!("WebGPU could not be initialised: {e}"))
                            })?;
                            state.borrow_mut().gpu = Some(d.clone());
                            d
                        }
                    };
                    (device, "webgpu")
                }
                other => {
                    return Err(err(format!("unknown backend {other:?}: use webgpu or cpu")).into());
                }
            };
            // Quantized weights are dequantized on load (WGSL has no 8-bit storage).
            let sam = weights::load_bpk(weights_bytes, &device).map_err(err)?;
            let mut st = state.borrow_mut();
            st.cache().clear();
            st.model = Some(Rc::new(Model {
                segmenter: Segmenter::new(sam, device),
                backend: name,
            }));
            Ok(JsValue::from_str(name))
        })
    }

    /// The backend of the loaded model (`"webgpu"`, `"cpu"`), or undefined.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> Option<String> {
        self.state.borrow().model.as_ref().map(|m| m.backend.into())
    }

    /// Parse a DICOM file; resolves to `{id, meta}` (meta: rows, cols, frames, modality,
    /// photometric, window, UIDs, ...). Pixel data is decoded per frame on demand.
    pub fn open(&self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let image = dicom::read(bytes).map_err(err)?;
        let meta = to_js(&image.meta)?;
        let mut st = self.state.borrow_mut();
        st.images.push(Some(image));
        let out = Object::new();
        set(&out, "id", (st.images.len() - 1) as u32);
        set(&out, "meta", meta);
        Ok(out.into())
    }

    /// Forget an image and its cached embeddings.
    pub fn close(&self, id: u32) {
        let mut st = self.state.borrow_mut();
        if let Some(slot) = st.images.get_mut(id as usize) {
            *slot = None;
        }
        st.cache().clear();
    }

    /// Decode one frame for display: `{rows, cols, channels, values: Float32Array
    /// (modality-LUT values, samples interleaved), min, max, window?: [center, width],
    /// windows: [{center, width, function, explanation}]}` — the frame's own windows (per
    /// frame in Enhanced objects), `window` the first of them.
    pub fn frame(&self, id: u32, frame: u32) -> Result<JsValue, JsError> {
        let st = self.state.borrow();
        let image = st.image(id)?;
        let f = image.frame(frame).map_err(err)?;
        let windows: Vec<dicom::lut::Window> = image
            .vois(frame)
            .map(|(v, _)| v)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| match v {
                dicom::lut::Voi::Window(w) => Some(w),
                dicom::lut::Voi::Table(..) => None,
            })
            .collect();
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in &f.values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let out = Object::new();
        set(&out, "rows", f.rows as u32);
        set(&out, "cols", f.cols as u32);
        set(&out, "channels", f.channels as u32);
        set(&out, "min", lo);
        set(&out, "max", hi);
        set(&out, "values", Float32Array::from(&f.values[..]));
        if let Some(w) = windows.first() {
            let pair = js_sys::Array::of2(&w.center.into(), &w.width.into());
            set(&out, "window", pair);
        }
        set(&out, "windows", to_js(&windows)?);
        Ok(out.into())
    }

    /// Forget the cached embedding of a frame (benchmarks time uncached encodes).
    pub fn forget(&self, id: u32, frame: u32) {
        self.state.borrow_mut().cache().remove(&(id, frame));
    }

    /// The model input of a frame, for running another engine on exactly the same input
    /// (the browser benchmark): `{pixels: Float32Array [3, 256, 256], scale, rows, cols}`;
    /// multiply pixel coordinates by `scale` for model coordinates.
    #[wasm_bindgen(js_name = modelInput)]
    pub fn model_input(&self, id: u32, frame: u32) -> Result<JsValue, JsError> {
        let st = self.state.borrow();
        let image = st.image(id)?;
        let pre =
            pipeline::preprocess(&image.frame(frame).map_err(err)?, &image.meta).map_err(err)?;
        let out = Object::new();
        set(&out, "pixels", Float32Array::from(&pre.pixels[..]));
        set(&out, "scale", pre.scale);
        set(&out, "rows", pre.rows as u32);
        set(&out, "cols", pre.cols as u32);
        Ok(out.into())
    }

    /// Encode a frame unless its embedding is cached. Resolves to `{ms, cached}`,
    /// `ms` including the wait for the device to finish.
    pub fn encode(&self, id: u32, frame: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let t = Instant::now();
            let (cached, _, _) = ensure_encoded(&state, id, frame).await?;
            let out = Object::new();
            set(&out, "ms", t.elapsed().as_secs_f64() * 1e3);
            set(&out, "cached", cached);
            Ok(out.into())
        })
    }

    /// Segment frame `frame` of image `id` with `request = {box?: [x0,y0,x1,y1],
    /// points?: [[x, y, label]], multimask?}` (pixels; label 1 positive, 0 negative).
    /// Resolves to `{mask: Uint8Array(rows*cols), rows, cols, area, iou, lowConfidence,
    /// warnings: [string], backend, ms, encodeMs, decodeMs, postMs}` (`warnings`: what the
    /// preprocessing replaced, e.g. an unusable CT window); `ms` is the whole call, `encodeMs` 0 when the
    /// embedding was cached, `decodeMs` the decoder with its readback, `postMs` the
    /// upsampling and threshold after it.
    pub fn segment(&self, id: u32, frame: u32, request: JsValue) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let t = Instant::now();
            let req: Request = serde_wasm_bindgen::from_value(request)
                .map_err(|e| err(format!("malformed segment request: {e}")))?;
            let points = req
                .points
                .iter()
                .map(|p| Ok((p[0], p[1], pipeline::point_label(p[2])?)))
                .collect::<Result<Vec<_>, pipeline::Error>>()
                .map_err(err)?;
            let prompt = PixelPrompt {
                bbox: req.bbox,
                points,
                multimask: req.multimask,
            };
            let (cached, pre, emb) = ensure_encoded(&state, id, frame).await?;
            let encode_ms = if cached {
                0.0
            } else {
                t.elapsed().as_secs_f64() * 1e3
            };
            let model = state.borrow().model()?;
            let s = model
                .segmenter
                .segment_async(&emb, &pre, &prompt)
                .await
                .map_err(err)?;
            let out = Object::new();
            set(&out, "mask", Uint8Array::from(&s.mask[..]));
            set(&out, "rows", s.rows as u32);
            set(&out, "cols", s.cols as u32);
            set(&out, "area", s.area as u32);
            set(&out, "iou", s.predicted_iou());
            set(&out, "lowConfidence", s.low_confidence());
            set(&out, "warnings", to_js(&pre.warnings)?);
            set(&out, "backend", model.backend);
            set(&out, "ms", t.elapsed().as_secs_f64() * 1e3);
            set(&out, "encodeMs", encode_ms);
            set(&out, "decodeMs", s.decode_ms);
            set(&out, "postMs", s.post_ms);
            Ok(out.into())
        })
    }

    /// The default 256-d embedding (pooled LiteMedSAM encoder output, L2-normalised) of
    /// a frame; reuses the segmentation embedding cache. Resolves to a Float32Array.
    pub fn embed(&self, id: u32, frame: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (_, pre, emb) = ensure_encoded(&state, id, frame).await?;
            let v = embed::pooled_vector_async(&emb, &pre).await.map_err(err)?;
            Ok(Float32Array::from(&v[..]).into())
        })
    }

    /// A binary DICOM SEG (Part 10 bytes) of `mask` (0/1, rows*cols) over a frame.
    pub fn seg(&self, id: u32, frame: u32, mask: &[u8], label: String) -> Result<Vec<u8>, JsError> {
        let st = self.state.borrow();
        let info = SegmentInfo {
            label,
            ..SegmentInfo::default()
        };
        dicom::seg::write_seg(st.image(id)?, frame, mask, &info).map_err(err)
    }

    /// NIfTI-1 (`.nii`) of the modality-LUT values of the images `ids` (one series:
    /// single-frame images in any order) with the DICOM geometry as the affine.
    pub fn nifti(&self, ids: Vec<u32>) -> Result<Vec<u8>, JsError> {
        let mut st = self.state.borrow_mut();
        // `assemble` takes the images by slice; move them out and back.
        for (i, &id) in ids.iter().enumerate() {
            st.image(id)?;
            if ids[..i].contains(&id) {
                return Err(err(format!("image {id} is listed twice")));
            }
        }
        let taken: Vec<DicomImage> = ids
            .iter()
            .filter_map(|&id| st.images[id as usize].take())
            .collect();
        let result = dicom::volume::assemble(&taken).and_then(|v| v.to_nifti());
        for (&id, image) in ids.iter().zip(taken) {
            st.images[id as usize] = Some(image);
        }
        result.map_err(err)
    }
}

/// The preprocessed frame and embedding of `(id, frame)`, encoded into the cache unless
/// present; the flag is true when it was cached. Waits for the device so timings are
/// honest.
async fn ensure_encoded(
    state: &Rc<RefCell<State>>,
    id: u32,
    frame: u32,
) -> Result<(bool, Preprocessed, Embedding), JsValue> {
    let key = (id, frame);
    let (pre, emb) = {
        let mut st = state.borrow_mut();
        if let Some((pre, emb)) = st.cache().get(&key) {
            return Ok((true, pre.clone(), emb.clone()));
        }
        let image = st.image(id)?;
        let model = st.model()?;
        let pre = model.segmenter.prepare(image, frame).map_err(err)?;
        let emb = model.segmenter.embed(&pre).map_err(err)?;
        (pre, emb)
    };
    // One scalar read back forces the encoder to finish on asynchronous devices.
    emb.tensor
        .clone()
        .slice([0..1, 0..1, 0..1, 0..1])
        .into_data_async()
        .await
        .map_err(|e| err(format!("the encoder failed on the device: {e:?}")))?;
    state
        .borrow_mut()
        .cache()
        .insert(key, pre.clone(), emb.clone());
    Ok((false, pre, emb))
}
