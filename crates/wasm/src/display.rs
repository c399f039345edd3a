//! What the viewer shows of a frame: the library's display rule
//! (`dicom::lut::render_view`, as `medfm convert --out x.png`) as RGBA, with the VOI it
//! applied and the frame's own VOIs.

use js_sys::{Object, Uint8Array};
use wasm_bindgen::prelude::*;

use medfm::dicom::lut;

use super::{Engine, bad, err, set, to_js};

#[wasm_bindgen]
impl Engine {
    /// A frame as the viewer shows it, rendered by the library's display rule
    /// (`dicom::lut::render_view`, as `medfm convert --out x.png`): `view = {voi?: n,
    /// window?: {center, width, function?}, invert?}` picks the frame's VOI number `n`
    /// (default 0: its first window or VOI LUT table; none: its min..max) or the caller's
    /// window (function `LINEAR` default, `LINEAR_EXACT`, `SIGMOID`), and the inversion
    /// (default: MONOCHROME1 grey frames). Returns `{rows, cols, rgba: Uint8Array(rows *
    /// cols * 4), voi: string, window?: {center, width, function}, inverted, range?: [min,
    /// max], vois: [string]}`: `voi` describes what was applied, `window` is set when it
    /// was a window (to start a window/level drag from), `range` the grey frame's modality
    /// values' range, `vois` lists the frame's own VOIs.
    pub fn render(&self, id: u32, frame: u32, view: JsValue) -> Result<JsValue, JsValue> {
        let view: View = if view.is_undefined() || view.is_null() {
            View::default()
        } else {
            serde_wasm_bindgen::from_value(view).map_err(|e| bad(format!("render view: {e}")))?
        };
        let st = self.state.borrow();
        let image = st.image(id)?;
        let f = image.frame(frame).map_err(err)?;
        let (vois, _) = image.vois(frame).map_err(err)?;
        let chosen = match (view.window, view.voi) {
            (Some(_), Some(_)) => return Err(bad("render view: give voi or window, not both")),
            (Some(w), None) => {
                let w = lut::Window {
                    center: w.center,
                    width: w.width,
                    function: w.function.unwrap_or(lut::VoiFunction::Linear),
                    explanation: String::new(),
                };
                w.check().map_err(bad)?;
                Some(lut::Voi::Window(w))
            }
            (None, Some(n)) => Some(vois.get(n as usize).cloned().ok_or_else(|| {
                bad(format!(
                    "frame {frame} has {} VOI(s), not a number {n}",
                    vois.len()
                ))
            })?),
            (None, None) => vois.first().cloned(),
        };
        let grey = f.channels == 1;
        // A grey frame without a VOI of its own is shown over its range: the window
        // `render_view` builds for `None`, made once here for the pixels, `window`, `voi`
        // and `range`.
        let range = grey.then(|| lut::Window::min_max(&f.values));
        let chosen = chosen.or_else(|| range.clone().map(lut::Voi::Window));
        let invert = view
            .invert
            .unwrap_or(grey && image.meta.photometric == "MONOCHROME1");
        let r = lut::render_view(&f, chosen.as_ref(), invert);
        let n = f.rows * f.cols;
        let mut rgba = vec![255u8; n * 4];
        for (i, px) in rgba.chunks_exact_mut(4).enumerate() {
            if r.channels == 1 {
                px[..3].fill(r.pixels[i]);
            } else {
                px[..3].copy_from_slice(&r.pixels[i * 3..i * 3 + 3]);
            }
        }
        let applied = match (&chosen, grey) {
            (Some(lut::Voi::Window(w)), true) => Some(w.clone()),
            _ => None,
        };
        let out = Object::new();
        set(&out, "rows", f.rows as u32);
        set(&out, "cols", f.cols as u32);
        set(&out, "rgba", Uint8Array::from(&rgba[..]));
        let described = match (&chosen, grey) {
            (Some(v), true) => v.describe(),
            _ => "colour (RGB as stored)".to_string(),
        };
        set(&out, "voi", described);
        if let Some(w) = applied {
            set(&out, "window", to_js(&w)?);
        }
        set(&out, "inverted", r.inverted);
        if let Some(mm) = range {
            let half = mm.width / 2.0;
            let range = js_sys::Array::of2(&(mm.center - half).into(), &(mm.center + half).into());
            set(&out, "range", range);
        }
        let listed: Vec<String> = vois.iter().map(lut::Voi::describe).collect();
        set(&out, "vois", to_js(&listed)?);
        Ok(out.into())
    }
}

/// What [`Engine::render`] shows.
#[derive(Default, serde::Deserialize)]
struct View {
    voi: Option<u32>,
    window: Option<ViewWindow>,
    invert: Option<bool>,
}

#[derive(serde::Deserialize)]
struct ViewWindow {
    center: f64,
    width: f64,
    function: Option<lut::VoiFunction>,
}
