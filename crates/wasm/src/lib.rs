//! The browser front (wasm32 only; natively this crate is empty): the wasm-bindgen facade
//! the Web Worker (`www/worker.js`) drives, the module's start hook and its allocator
//! ([`libc_shim`]). It converts types and errors; the work is in the core (`medfm`).
//!
//! One [`Engine`] per worker holds the opened DICOM images, the model on its device
//! (WebGPU through burn-wgpu, or the CPU backend) and the embedding cache, so a prompt
//! change on an already encoded frame costs one decode. Calls that touch the GPU return
//! promises (WebGPU readbacks are asynchronous); the worker serialises calls.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Float32Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

mod dicomweb;
mod display;
mod libc_shim;
mod pixels;
mod spans;
mod volume;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

use medfm::dicom::{self, DicomImage, seg::SegmentInfo};
use medfm::model::{Embedding, weights};
use medfm::pipeline::{
    self, PixelPrompt, Preprocessed, Segmenter,
    embed::{self, EntryMeta, Index},
    session::EmbeddingCache,
};
use medfm::{Device, ErrorKind};

/// Embeddings kept per worker (4 MiB each): a few frames of scrolling back and forth.
const CACHE_FRAMES: usize = 8;

/// Route Rust panics to the console with their message (instead of a bare
/// "unreachable"), so the worker can report them; runs when the module is initialised.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("medfm panicked: {info}").into());
    }));
    spans::install();
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
/// compiled into this build: the worker checks every weights download and cached copy
/// against it, so a server or cache cannot hand it other weights.
#[wasm_bindgen(js_name = pinnedSha256)]
pub fn pinned_sha256(precision: &str) -> Result<String, JsValue> {
    let p: weights::Precision = precision.parse().map_err(err)?;
    Ok(weights::pinned_sha256(p).to_string())
}

/// Why a WebGPU adapter is a software one (SwiftShader, WARP, a fallback adapter), or
/// undefined for a real GPU: the rule of `pipeline::device`, as natively. `facts`:
/// `{isFallbackAdapter, name, driver}` from the adapter's `GPUAdapterInfo`.
#[wasm_bindgen(js_name = softwareAdapter)]
pub fn software_adapter(facts: JsValue) -> Result<Option<String>, JsValue> {
    let facts: pipeline::device::AdapterFacts =
        serde_wasm_bindgen::from_value(facts).map_err(|e| bad(format!("adapter facts: {e}")))?;
    Ok(facts.software())
}

/// Parse a DICOM file and return its metadata as a JS object.
#[wasm_bindgen(js_name = dicomInfo)]
pub fn dicom_info(bytes: &[u8]) -> Result<JsValue, JsValue> {
    let image = dicom::read(bytes).map_err(err)?;
    to_js(&image.meta)
}

/// A JS `Error` with the message and, for errors of a known kind, its `code`
/// (`bad-input`, `weights`, `device`, `io`: [`ErrorKind::code`]), which the JS API passes on.
fn fail(kind: Option<ErrorKind>, msg: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&msg.to_string());
    if let Some(kind) = kind {
        set(&e, "code", kind.code());
    }
    e.into()
}

/// An error of the library (any layer's: [`medfm::Error`] says its kind) as a JS `Error`
/// with its `code`.
fn err(e: impl Into<medfm::Error>) -> JsValue {
    let e = e.into();
    fail(Some(e.kind()), e)
}

/// The caller's mistake (a bad argument, an unknown image, a call out of order).
fn bad(msg: impl std::fmt::Display) -> JsValue {
    fail(Some(ErrorKind::BadInput), msg)
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsValue> {
    serde_wasm_bindgen::to_value(v).map_err(|e| fail(None, e))
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a plain object we created cannot fail.
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

/// A model input for JS: `{pixels: Float32Array [3, 256, 256], scale, rows, cols, newRows,
/// newCols}`, the image resized to `newRows x newCols` at the top left of the 256 grid.
fn model_input_object(pre: &pipeline::Preprocessed) -> Object {
    let out = Object::new();
    set(&out, "pixels", Float32Array::from(&pre.pixels[..]));
    set(&out, "scale", pre.scale);
    set(&out, "rows", pre.rows as u32);
    set(&out, "cols", pre.cols as u32);
    set(&out, "newRows", pre.new_rows as u32);
    set(&out, "newCols", pre.new_cols as u32);
    out
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
    /// Frame vectors embedded so far (cosine search), `keys[i]` the `(id, frame)` of
    /// entry `i`; cleared with the model (vectors depend on its weights).
    index: Index,
    keys: Vec<(u32, u32)>,
    /// Slices encoded by a series recipe (propagation), and the propagation in progress.
    series_cache: Option<EmbeddingCache<volume::SliceKey>>,
    propagation: Option<volume::Run>,
}

impl State {
    fn image(&self, id: u32) -> Result<&DicomImage, JsValue> {
        self.images
            .get(id as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| bad(format!("no open image with id {id}")))
    }

    /// The loaded model, shared so that it can be used across an await without holding
    /// the state's borrow.
    fn model(&self) -> Result<Rc<Model>, JsValue> {
        self.model
            .clone()
            .ok_or_else(|| bad("the model is not loaded yet (call loadModel first)"))
    }

    /// The volume of the images `ids` (one series), by `dicom::volume::assemble`: the
    /// images are moved out for it and put back.
    fn assemble(&mut self, ids: &[u32]) -> Result<dicom::volume::Volume, JsValue> {
        for (i, &id) in ids.iter().enumerate() {
            self.image(id)?;
            if ids[..i].contains(&id) {
                return Err(bad(format!("image {id} is listed twice")));
            }
        }
        let taken: Vec<DicomImage> = ids
            .iter()
            .filter_map(|&id| self.images[id as usize].take())
            .collect();
        let result = dicom::volume::assemble(&taken);
        for (&id, image) in ids.iter().zip(taken) {
            self.images[id as usize] = Some(image);
        }
        result.map_err(err)
    }

    fn clear_index(&mut self) {
        self.index = Index::default();
        self.keys.clear();
    }

    fn cache(&mut self) -> &mut EmbeddingCache<(u32, u32)> {
        self.cache
            .get_or_insert_with(|| EmbeddingCache::new(CACHE_FRAMES))
    }

    fn series_cache(&mut self) -> &mut EmbeddingCache<volume::SliceKey> {
        self.series_cache
            .get_or_insert_with(|| EmbeddingCache::new(volume::SERIES_FRAMES))
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

/// A prompt from the JS API's box and `[x, y, label]` points (label 1 or 0, checked).
fn pixel_prompt(
    bbox: Option<[f32; 4]>,
    points: &[[f32; 3]],
    multimask: bool,
) -> Result<PixelPrompt, JsValue> {
    let points = points
        .iter()
        .map(|p| Ok((p[0], p[1], pipeline::point_label(p[2])?)))
        .collect::<Result<Vec<_>, pipeline::Error>>()
        .map_err(err)?;
    Ok(PixelPrompt {
        bbox,
        points,
        multimask,
    })
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
                                fail(
                                    Some(ErrorKind::Device),
                                    format!("WebGPU could not be initialised: {e}"),
                                )
                            })?;
                            state.borrow_mut().gpu = Some(d.clone());
                            d
                        }
                    };
                    (device, "webgpu")
                }
                other => {
                    return Err(bad(format!("unknown backend {other:?}: use webgpu or cpu")));
                }
            };
            // Quantized weights are dequantized on load (WGSL has no 8-bit storage).
            let sam = weights::load_bpk(weights_bytes, &device).map_err(err)?;
            let mut st = state.borrow_mut();
            st.cache().clear();
            st.series_cache().clear();
            st.propagation = None;
            st.clear_index();
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
    pub fn open(&self, bytes: &[u8]) -> Result<JsValue, JsValue> {
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
        st.series_cache().clear();
        // Drop the image's vectors from the search index.
        let (index, keys) = (std::mem::take(&mut st.index), std::mem::take(&mut st.keys));
        for (i, key) in keys.into_iter().enumerate() {
            if key.0 != id {
                // Re-adding vectors of the index's own dimension cannot fail.
                let _ = st
                    .index
                    .add(index.vector(i).to_vec(), index.meta[i].clone());
                st.keys.push(key);
            }
        }
    }

    /// Decode one frame for display: `{rows, cols, channels, values: Float32Array
    /// (modality-LUT values, samples interleaved), min, max, window?: [center, width],
    /// windows: [{center, width, function, explanation}]}` — the frame's own windows (per
    /// frame in Enhanced objects), `window` the first of them.
    pub fn frame(&self, id: u32, frame: u32) -> Result<JsValue, JsValue> {
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
    /// (the browser benchmark): see [`model_input_object`]; multiply pixel coordinates by
    /// `scale` for model coordinates.
    #[wasm_bindgen(js_name = modelInput)]
    pub fn model_input(&self, id: u32, frame: u32) -> Result<JsValue, JsValue> {
        let st = self.state.borrow();
        let image = st.image(id)?;
        let pre =
            pipeline::preprocess(&image.frame(frame).map_err(err)?, &image.meta).map_err(err)?;
        Ok(model_input_object(&pre).into())
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
                .map_err(|e| bad(format!("malformed segment request: {e}")))?;
            let prompt = pixel_prompt(req.bbox, &req.points, req.multimask)?;
            let (cached, pre, emb) = ensure_encoded(&state, id, frame).await?;
            let (s, encode_ms) = decode(&state, (cached, &pre, &emb), &prompt, t).await?;
            let out = Object::new();
            set(&out, "mask", Uint8Array::from(&s.mask[..]));
            set(&out, "rows", s.rows as u32);
            set(&out, "cols", s.cols as u32);
            set(&out, "area", s.area as u32);
            set(&out, "iou", s.predicted_iou());
            set(&out, "lowConfidence", s.low_confidence());
            set(&out, "warnings", to_js(&pre.warnings)?);
            set(&out, "backend", state.borrow().model()?.backend);
            set(&out, "ms", t.elapsed().as_secs_f64() * 1e3);
            set(&out, "encodeMs", encode_ms);
            set(&out, "decodeMs", s.decode_ms);
            set(&out, "postMs", s.post_ms);
            Ok(out.into())
        })
    }

    /// The default 256-d embedding (pooled LiteMedSAM encoder output, L2-normalised) of
    /// a frame; reuses the segmentation embedding cache and keeps the vector for
    /// [`Engine::similar`]. Resolves to a Float32Array.
    pub fn embed(&self, id: u32, frame: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let v = frame_vector(&state, id, frame).await?;
            Ok(Float32Array::from(&v[..]).into())
        })
    }

    /// The `k` frames most similar (cosine of the embeddings) to frame `frame` of image
    /// `id` among the frames embedded so far ([`Engine::embed`]), best first, the frame
    /// itself left out: `[{id, frame, score}]`. Embeds the query frame if needed.
    pub fn similar(&self, id: u32, frame: u32, k: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let q = frame_vector(&state, id, frame).await?;
            let st = state.borrow();
            let hits: Vec<Hit> = st
                .index
                .search(&q, st.index.len())
                .into_iter()
                .map(|(i, score)| (st.keys[i], score))
                .filter(|&(key, _)| key != (id, frame))
                .take(k as usize)
                .map(|((id, frame), score)| Hit { id, frame, score })
                .collect();
            to_js(&hits)
        })
    }

    /// The open images grouped into series and ordered, by the library's series rule
    /// (`dicom::series::group`: SeriesInstanceUID in first-opened order; slices along the
    /// normal, else InstanceNumber with the reason in `warnings`; an instance opened again
    /// listed once, its other ids in `copies`): `[{index, uid, study, modality,
    /// description, rows, cols, frames, refs: [[id, frame]], copies: [id], warnings}]`.
    pub fn series(&self) -> Result<JsValue, JsValue> {
        let st = self.state.borrow();
        let open: Vec<(u32, &DicomImage)> = st
            .images
            .iter()
            .enumerate()
            .filter_map(|(id, img)| Some((id as u32, img.as_ref()?)))
            .collect();
        let refs: Vec<&DicomImage> = open.iter().map(|&(_, img)| img).collect();
        let list: Vec<SeriesEntry> = dicom::series::group(&refs)
            .into_iter()
            .enumerate()
            .map(|(index, s)| SeriesEntry {
                index,
                frames: s.frames.len(),
                refs: s.frames.iter().map(|&(i, f)| (open[i].0, f)).collect(),
                copies: s.copies.iter().map(|&i| open[i].0).collect(),
                uid: s.uid,
                study: s.study,
                modality: s.modality,
                description: s.description,
                rows: s.rows,
                cols: s.cols,
                warnings: s.warnings,
            })
            .collect();
        to_js(&list)
    }

    /// A binary DICOM SEG (Part 10 bytes) of `mask` (0/1, rows*cols) over a frame.
    pub fn seg(&self, id: u32, frame: u32, mask: &[u8], label: String) -> Result<Vec<u8>, JsValue> {
        let st = self.state.borrow();
        let info = SegmentInfo {
            label,
            ..SegmentInfo::default()
        };
        dicom::seg::write_seg(st.image(id)?, frame, mask, &info).map_err(err)
    }

    /// NIfTI-1 (`.nii`) of the modality-LUT values of the images `ids` (one series:
    /// single-frame images in any order) with the DICOM geometry as the affine.
    pub fn nifti(&self, ids: Vec<u32>) -> Result<Vec<u8>, JsValue> {
        let volume = self.state.borrow_mut().assemble(&ids)?;
        volume.to_nifti().map_err(err)
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
    encoded(&emb).await?;
    state
        .borrow_mut()
        .cache()
        .insert(key, pre.clone(), emb.clone());
    Ok((false, pre, emb))
}

/// `prompt` decoded against an encoded slice (`ensure_encoded`'s or `ensure_slice`'s
/// answer), and the encoder's share of the call that started at `t`: 0 when the embedding
/// was cached.
async fn decode(
    state: &Rc<RefCell<State>>,
    (cached, pre, emb): (bool, &Preprocessed, &Embedding),
    prompt: &PixelPrompt,
    t: Instant,
) -> Result<(pipeline::Segmentation, f64), JsValue> {
    let encode_ms = if cached {
        0.0
    } else {
        t.elapsed().as_secs_f64() * 1e3
    };
    let model = state.borrow().model()?;
    let s = model
        .segmenter
        .segment_async(emb, pre, prompt)
        .await
        .map_err(err)?;
    Ok((s, encode_ms))
}

/// Wait until the encoder has produced `emb`: one scalar read back forces it to finish on
/// asynchronous devices (WebGPU), so timings are honest and device errors surface here.
async fn encoded(emb: &Embedding) -> Result<(), JsValue> {
    emb.tensor
        .clone()
        .slice([0..1, 0..1, 0..1, 0..1])
        .into_data_async()
        .await
        .map(|_| ())
        .map_err(|e| {
            fail(
                Some(ErrorKind::Device),
                format!("the encoder failed on the device: {e:?}"),
            )
        })
}

/// The frame's pooled embedding vector, from the search index or computed and added to it.
async fn frame_vector(
    state: &Rc<RefCell<State>>,
    id: u32,
    frame: u32,
) -> Result<Vec<f32>, JsValue> {
    {
        let st = state.borrow();
        if let Some(i) = st.keys.iter().position(|&k| k == (id, frame)) {
            return Ok(st.index.vector(i).to_vec());
        }
    }
    let (_, pre, emb) = ensure_encoded(state, id, frame).await?;
    let v = embed::pooled_vector_async(&emb, &pre).await.map_err(err)?;
    let mut st = state.borrow_mut();
    // Model calls are serialised by the worker, but `close` is not: keep the vector only
    // while the image is still open.
    if !st.keys.contains(&(id, frame)) {
        let meta = EntryMeta::for_frame(&st.image(id)?.meta, frame, "");
        st.index.add(v.clone(), meta).map_err(err)?;
        st.keys.push((id, frame));
    }
    Ok(v)
}

/// One answer of [`Engine::similar`].
#[derive(serde::Serialize)]
struct Hit {
    id: u32,
    frame: u32,
    score: f32,
}

/// One series of [`Engine::series`].
#[derive(serde::Serialize)]
struct SeriesEntry {
    index: usize,
    uid: String,
    study: String,
    modality: String,
    description: String,
    rows: u32,
    cols: u32,
    frames: usize,
    refs: Vec<(u32, u32)>,
    /// Image ids that repeat an instance of `refs` (opened again): not in `refs`.
    copies: Vec<u32>,
    warnings: Vec<String>,
}
