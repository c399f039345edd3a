//! Volumes in the browser: a prompt carried through a series (`pipeline::propagate`'s
//! [`Propagator`] driven one slice per call, so the worker can post each mask as it comes
//! and stop between slices), and one SEG with several segments over a series.
//!
//! Slices are preprocessed by the series recipe (one intensity clip for the series) and
//! their encoder outputs kept in their own cache, keyed by image, frame and clip: a new
//! box, or propagating again from a corrected slice, re-runs only the decoder on slices
//! already encoded.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

use super::{
    Engine, State, bad, decode, encoded, err, model_input_object, pixel_prompt, set, to_js,
};
use medfm::dicom::seg::{SegFrame, Segment, SegmentInfo};
use medfm::dicom::{self, DicomImage, series, volume};
use medfm::model::Embedding;
use medfm::pipeline::Preprocessed;
use medfm::pipeline::preprocess::{self, Clip};
use medfm::pipeline::propagate::{Options, Propagator, SliceMask, volume_ml};

/// Series slices whose encoder outputs are kept (4 MiB each): a 64-slice series.
pub(super) const SERIES_FRAMES: usize = 64;

/// Cache key of a slice encoded by the series recipe: image, frame, clip bounds' bits.
pub(super) type SliceKey = (u32, u32, Option<(u32, u32)>);

/// A propagation in progress.
pub(super) struct Run {
    /// `(image id, frame)` of every slice of the series, in order.
    refs: Vec<(u32, u32)>,
    clip: Option<Clip>,
    propagator: Propagator,
    /// Voxel spacing (mm) when the series has one.
    spacing: Option<[f64; 3]>,
    warnings: Vec<String>,
    started: Instant,
    /// Incremented by every begin: a step that finds another run drops its result.
    generation: u64,
}

/// A propagation request as the JS API sends it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    #[serde(default)]
    points: Vec<[f32; 3]>,
    extent: Option<usize>,
    #[serde(rename = "minIou")]
    min_iou: Option<f32>,
}

/// One segment of [`Engine::seg_segments`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentSpec {
    label: String,
    color: Option<[u8; 3]>,
    /// `(image id, frame)` of each mask, in order.
    refs: Vec<(u32, u32)>,
}

fn pairs(flat: &[u32]) -> Result<Vec<(u32, u32)>, JsValue> {
    if flat.is_empty() || !flat.len().is_multiple_of(2) {
        return Err(bad(
            "a series is given as [id, frame, id, frame, ...] pairs",
        ));
    }
    Ok(flat.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// The open images behind `refs`, each once in first-listed order, with their ids.
fn series_images<'a>(
    st: &'a State,
    refs: &[(u32, u32)],
) -> Result<(Vec<u32>, Vec<&'a DicomImage>), JsValue> {
    let mut ids: Vec<u32> = Vec::new();
    for &(id, _) in refs {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let images = ids
        .iter()
        .map(|&id| st.image(id))
        .collect::<Result<_, _>>()?;
    Ok((ids, images))
}

/// The decoded frames behind `refs`, in order.
fn series_frames(st: &State, refs: &[(u32, u32)]) -> Result<Vec<dicom::Frame>, JsValue> {
    refs.iter()
        .map(|&(id, f)| st.image(id).and_then(|img| img.frame(f).map_err(err)))
        .collect()
}

fn clip_key(clip: Option<Clip>) -> Option<(u32, u32)> {
    clip.map(|c| (c.lo.to_bits(), c.hi.to_bits()))
}

#[wasm_bindgen]
impl Engine {
    /// Start carrying a prompt through a series. `refs`: the series' slices as flat
    /// `[id, frame, ...]` pairs in the order of [`Engine::series`]; `start`: the index of
    /// the prompted slice among them; `request = {box?, points?: [[x, y, label]], extent?,
    /// minIou?}` (pixels of the start slice). The slices must form a volume (one
    /// orientation and size, all placed or none), the prompt must fit the start slice.
    /// Returns `{slices, warnings}`; then call `propagateStep` until it gives null, and
    /// `propagateEnd`. A new begin replaces a run in progress.
    #[wasm_bindgen(js_name = propagateBegin)]
    pub fn propagate_begin(
        &self,
        refs: Vec<u32>,
        start: u32,
        request: JsValue,
    ) -> Result<JsValue, JsValue> {
        let refs = pairs(&refs)?;
        let req: Request = serde_wasm_bindgen::from_value(request)
            .map_err(|e| bad(format!("malformed propagate request: {e}")))?;
        let prompt = pixel_prompt(req.bbox, &req.points, false)?;
        let options = Options {
            extent: req.extent,
            min_iou: req.min_iou.unwrap_or(Options::default().min_iou),
        };
        let mut st = self.state.borrow_mut();
        st.model()?;
        // The images of the series, once each, and the library's order of their slices.
        for &(id, frame) in &refs {
            if frame >= st.image(id)?.meta.frames {
                return Err(bad(format!("image {id} has no frame {frame}")));
            }
        }
        let (ids, images) = series_images(&st, &refs)?;
        let slices = series::order(&images).map_err(err)?;
        let ordered: Vec<(u32, u32)> = slices.order.iter().map(|&(i, f)| (ids[i], f)).collect();
        if ordered != refs {
            return Err(bad(
                "the slices given are not one whole series in the series order (list them \
                 from series())",
            ));
        }
        let propagator =
            Propagator::new(refs.len(), start as usize, &prompt, &options).map_err(err)?;
        let frames = series_frames(&st, &refs)?;
        let first_meta = &st.image(refs[0].0)?.meta;
        let (clip, mut warnings) = preprocess::series_clip(&frames, first_meta);
        // The prompt is checked on the start slice before anything is encoded.
        let (sid, _) = refs[start as usize];
        let pre =
            preprocess::preprocess_clipped(&frames[start as usize], &st.image(sid)?.meta, clip)
                .map_err(err)?;
        prompt.to_model(&pre).map_err(err)?;
        let spacing = match volume::spacing(&images, &slices) {
            Ok((s, assumed)) => {
                warnings.extend(assumed);
                Some(s)
            }
            Err(e) => {
                warnings.push(format!("no volume in mL: {e}"));
                None
            }
        };
        warnings.extend(slices.warnings.iter().cloned());
        let generation = st.propagation.as_ref().map_or(0, |r| r.generation + 1);
        st.propagation = Some(Run {
            refs,
            clip,
            propagator,
            spacing,
            warnings: warnings.clone(),
            started: Instant::now(),
            generation,
        });
        let out = Object::new();
        set(&out, "slices", ordered.len() as u32);
        set(&out, "warnings", to_js(&warnings)?);
        Ok(out.into())
    }

    /// The model inputs of a series' slices by the series recipe (one intensity clip for
    /// the series, as [`Engine::propagate_begin`] preprocesses them), in the order of
    /// `refs` (flat `[id, frame, ...]` pairs as [`Engine::series`] lists them): for running
    /// another engine on exactly the same inputs (the browser propagation benchmark): an
    /// array of [`super::model_input_object`]s.
    #[wasm_bindgen(js_name = seriesModelInputs)]
    pub fn series_model_inputs(&self, refs: Vec<u32>) -> Result<JsValue, JsValue> {
        let refs = pairs(&refs)?;
        let st = self.state.borrow();
        let frames = series_frames(&st, &refs)?;
        let (clip, _) = preprocess::series_clip(&frames, &st.image(refs[0].0)?.meta);
        let out = Array::new();
        for (&(id, _), frame) in refs.iter().zip(&frames) {
            let pre =
                preprocess::preprocess_clipped(frame, &st.image(id)?.meta, clip).map_err(err)?;
            out.push(&model_input_object(&pre));
        }
        Ok(out.into())
    }

    /// Segment the next slice of the propagation in progress. Resolves to null when it is
    /// over, else `{slice, kept, mask?: Uint8Array(rows*cols), rows, cols, area, iou,
    /// encodeMs, ms}`: `kept` false when the slice ended its direction (an empty or
    /// unconfident mask without an extent; no mask then).
    #[wasm_bindgen(js_name = propagateStep)]
    pub fn propagate_step(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let t = Instant::now();
            let (next, key, generation) = {
                let mut st = state.borrow_mut();
                let Some(run) = st.propagation.as_mut() else {
                    return Err(bad("no propagation in progress (propagateBegin first)"));
                };
                let Some((i, prompt)) = run.propagator.next_slice() else {
                    return Ok(JsValue::NULL);
                };
                let (id, frame) = run.refs[i];
                ((i, prompt), (id, frame, run.clip), run.generation)
            };
            let (i, prompt) = next;
            let (cached, pre, emb) = ensure_slice(&state, key).await?;
            let (s, encode_ms) = decode(&state, (cached, &pre, &emb), &prompt, t).await?;
            let mask = SliceMask::new(i, &prompt, s);
            let mut st = state.borrow_mut();
            let Some(run) = st
                .propagation
                .as_mut()
                .filter(|r| r.generation == generation)
            else {
                return Err(bad("the propagation was replaced or ended meanwhile"));
            };
            let out = Object::new();
            set(&out, "slice", i as u32);
            set(&out, "rows", mask.rows as u32);
            set(&out, "cols", mask.cols as u32);
            set(&out, "area", mask.area as u32);
            set(&out, "iou", mask.iou);
            let kept = run.propagator.feed(mask, pre.scale).map_err(err)?;
            set(&out, "kept", kept.is_some());
            if let Some(m) = kept {
                set(&out, "mask", Uint8Array::from(&m.mask[..]));
            }
            set(&out, "encodeMs", encode_ms);
            set(&out, "ms", t.elapsed().as_secs_f64() * 1e3);
            Ok(out.into())
        })
    }

    /// Stop the propagation in progress after the slice being computed (its masks so far
    /// are kept; both directions end as `cancelled`).
    #[wasm_bindgen(js_name = propagateCancel)]
    pub fn propagate_cancel(&self) {
        if let Some(run) = self.state.borrow_mut().propagation.as_mut() {
            run.propagator.cancel();
        }
    }

    /// End the propagation: `{slices: [{slice, area, iou}], stopped: [up, down], voxels,
    /// volumeMl (null without a spacing), warnings, ms}` (`stopped`: 'series-end', 'extent',
    /// 'empty-mask', 'low-iou' or 'cancelled' per direction, higher indices first).
    #[wasm_bindgen(js_name = propagateEnd)]
    pub fn propagate_end(&self) -> Result<JsValue, JsValue> {
        let run = self
            .state
            .borrow_mut()
            .propagation
            .take()
            .ok_or_else(|| bad("no propagation in progress"))?;
        let ms = run.started.elapsed().as_secs_f64() * 1e3;
        let result = run.propagator.finish();
        let voxels = result.voxels();
        #[derive(serde::Serialize)]
        struct Kept {
            slice: usize,
            area: usize,
            iou: f32,
        }
        let slices: Vec<Kept> = result
            .slices
            .iter()
            .map(|m| Kept {
                slice: m.slice,
                area: m.area,
                iou: m.iou,
            })
            .collect();
        let out = Object::new();
        set(&out, "slices", to_js(&slices)?);
        set(&out, "stopped", to_js(&result.stopped)?);
        set(&out, "voxels", voxels as u32);
        set(
            &out,
            "volumeMl",
            run.spacing
                .map_or(JsValue::NULL, |s| volume_ml(voxels, s).into()),
        );
        set(&out, "warnings", to_js(&run.warnings)?);
        set(&out, "ms", ms);
        Ok(out.into())
    }

    /// Volume in mL of `voxels` voxels of the series `refs` (flat `[id, frame, ...]`
    /// pairs, the series order), by the library's spacing rule; null when the slices have
    /// no spacing (not a volume).
    #[wasm_bindgen(js_name = volumeMl)]
    pub fn volume_ml(&self, refs: Vec<u32>, voxels: u32) -> Result<JsValue, JsValue> {
        let refs = pairs(&refs)?;
        let st = self.state.borrow();
        let (_, images) = series_images(&st, &refs)?;
        let Ok(slices) = series::order(&images) else {
            return Ok(JsValue::NULL);
        };
        Ok(volume::spacing(&images, &slices)
            .map_or(JsValue::NULL, |(s, _)| volume_ml(voxels as usize, s).into()))
    }

    /// One binary SEG with several segments over one series: `segments = [{label, color?:
    /// [r, g, b], refs: [[id, frame], ...]}]`, the masks of every segment's frames back to
    /// back in `masks` (0/1, rows*cols each, in the order listed). Segments are numbered in
    /// order; each segment's frames should be in series order.
    #[wasm_bindgen(js_name = segSegments)]
    pub fn seg_segments(&self, segments: JsValue, masks: &[u8]) -> Result<Vec<u8>, JsValue> {
        let specs = parse_segments(segments)?;
        let st = self.state.borrow();
        let split = split_masks(&st, &specs, masks)?;
        let built: Vec<Segment> = specs
            .iter()
            .zip(split)
            .map(|(spec, frames)| {
                Ok(Segment {
                    info: SegmentInfo {
                        label: spec.label.clone(),
                        color: spec.color,
                        ..SegmentInfo::default()
                    },
                    frames: frames
                        .into_iter()
                        .map(|(id, frame, mask)| {
                            Ok(SegFrame {
                                source: st.image(id)?,
                                frame,
                                mask,
                            })
                        })
                        .collect::<Result<_, JsValue>>()?,
                })
            })
            .collect::<Result<_, JsValue>>()?;
        dicom::seg::write_seg_segments(&built).map_err(err)
    }

    /// NIfTI-1 label map of segments over the series of the images `ids` (as
    /// [`Engine::nifti`] writes the series, same header): voxel value = segment number
    /// (1, 2, ... in the order of `segments`, as [`Engine::seg_segments`] takes them), the
    /// later segment where two overlap, 0 elsewhere.
    #[wasm_bindgen(js_name = niftiLabels)]
    pub fn nifti_labels(
        &self,
        ids: Vec<u32>,
        segments: JsValue,
        masks: &[u8],
    ) -> Result<Vec<u8>, JsValue> {
        let specs = parse_segments(segments)?;
        let mut st = self.state.borrow_mut();
        let split = split_masks(&st, &specs, masks)?;
        let v = st.assemble(&ids)?;
        // Each frame as the volume names its source: (index in `ids`, frame).
        let mut masks = Vec::with_capacity(split.len());
        for frames in &split {
            let mut placed = Vec::with_capacity(frames.len());
            for &(id, frame, mask) in frames {
                let i = ids
                    .iter()
                    .position(|&i| i == id)
                    .ok_or_else(|| bad(format!("frame [{id}, {frame}] is not in the series")))?;
                placed.push(((i, frame), mask));
            }
            masks.push(placed);
        }
        let refs: Vec<&volume::SegmentMasks> = masks.iter().map(Vec::as_slice).collect();
        v.label_map(&refs).map_err(err)?.to_nifti().map_err(err)
    }
}

fn parse_segments(segments: JsValue) -> Result<Vec<SegmentSpec>, JsValue> {
    serde_wasm_bindgen::from_value(segments).map_err(|e| bad(format!("malformed segments: {e}")))
}

/// The masks of every segment's frames: `masks` cut by each frame's image size, in order.
#[allow(clippy::type_complexity)]
fn split_masks<'a>(
    st: &State,
    specs: &[SegmentSpec],
    masks: &'a [u8],
) -> Result<Vec<Vec<(u32, u32, &'a [u8])>>, JsValue> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut frames = Vec::with_capacity(spec.refs.len());
        for &(id, frame) in &spec.refs {
            let image = st.image(id)?;
            let n = image.meta.rows as usize * image.meta.cols as usize;
            let mask = masks.get(at..at + n).ok_or_else(|| {
                bad(format!(
                    "segment {:?}: the masks end before its frame [{id}, {frame}]",
                    spec.label
                ))
            })?;
            at += n;
            frames.push((id, frame, mask));
        }
        out.push(frames);
    }
    if at != masks.len() {
        return Err(bad(format!(
            "{} mask bytes given, the segments' frames take {at}",
            masks.len()
        )));
    }
    Ok(out)
}

/// Slice `key` preprocessed by the series recipe and encoded, from the series cache or
/// computed into it; true when cached. Waits for the device so timings are honest.
async fn ensure_slice(
    state: &Rc<RefCell<State>>,
    key: (u32, u32, Option<Clip>),
) -> Result<(bool, Preprocessed, Embedding), JsValue> {
    let (id, frame, clip) = key;
    let cache_key: SliceKey = (id, frame, clip_key(clip));
    let (pre, emb) = {
        let mut st = state.borrow_mut();
        if let Some((pre, emb)) = st.series_cache().get(&cache_key) {
            return Ok((true, pre.clone(), emb.clone()));
        }
        let image = st.image(id)?;
        let model = st.model()?;
        let pre =
            preprocess::preprocess_clipped(&image.frame(frame).map_err(err)?, &image.meta, clip)
                .map_err(err)?;
        let emb = model.segmenter.embed(&pre).map_err(err)?;
        (pre, emb)
    };
    encoded(&emb).await?;
    state
        .borrow_mut()
        .series_cache()
        .insert(cache_key, pre.clone(), emb.clone());
    Ok((false, pre, emb))
}
