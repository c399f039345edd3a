//! numpy arrays in: a 2D image becomes a DICOM instance by the core's rule for caller
//! pixels (`dicom::pixels`, as the JS API's `openPixels`), masks are read in place.

use std::borrow::Cow;

use medfm::Error;
use medfm::dicom::pixels::{self, PixelSpec, Values, Window};
use medfm::dicom::{self, DicomImage};
use numpy::{Element, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::bad;

/// The dtypes an image may have, as `Values` takes them.
const IMAGE_DTYPES: &str = "uint8, int16, uint16 or float32";

/// `array` as a read-only view of `T`, when it is a numpy array of that dtype.
fn view<'py, T: Element>(array: &Bound<'py, PyAny>) -> Option<PyReadonlyArrayDyn<'py, T>> {
    array.extract::<PyReadonlyArrayDyn<'py, T>>().ok()
}

/// A numpy array's dtype name, or the Python type of what is not an array.
pub(crate) fn describe(value: &Bound<'_, PyAny>) -> String {
    match value.getattr("dtype") {
        Ok(dtype) => format!("an array of dtype {dtype}"),
        Err(_) => match value.get_type().name() {
            Ok(name) => format!("a {name}"),
            Err(_) => "an object".into(),
        },
    }
}

/// The numbers of a sequence (a tuple, a list, a numpy array: anything iterable), `what`
/// naming it in the error.
pub(crate) fn numbers(value: &Bound<'_, PyAny>, what: &str) -> Result<Vec<f64>, Error> {
    let not = || {
        bad(format!(
            "{what} must be a sequence of numbers; got {}",
            describe(value)
        ))
    };
    value
        .try_iter()
        .map_err(|_| not())?
        .map(|item| item.and_then(|i| i.extract::<f64>()).map_err(|_| not()))
        .collect()
}

/// [`numbers`], exactly `N` of them (`shape` says what they are).
pub(crate) fn exactly<const N: usize>(
    value: &Bound<'_, PyAny>,
    what: &str,
    shape: &str,
) -> Result<[f64; N], Error> {
    let v = numbers(value, what)?;
    <[f64; N]>::try_from(v.as_slice())
        .map_err(|_| bad(format!("{what} is {shape}: {N} numbers, got {}", v.len())))
}

/// The elements of `view` in memory order, when it is C-contiguous.
fn contiguous<'a, T: Element>(view: &'a PyReadonlyArrayDyn<'_, T>) -> Result<&'a [T], Error> {
    let not = || {
        bad("the array is not C-contiguous (a slice or a transpose): pass np.ascontiguousarray(a)")
    };
    // `as_slice` also takes Fortran order, whose elements are not in row order.
    if !view.is_c_contiguous() {
        return Err(not());
    }
    view.as_slice().map_err(|_| not())
}

/// A 2D image `(rows, cols)` (grey) or `(rows, cols, 3)` (uint8 RGB) as the DICOM instance
/// the core segments. `window`: (center, width), the CT recipe's window; `modality`:
/// default `CT` with a window, else `OT` (a percentile clip).
pub(crate) fn image(
    array: &Bound<'_, PyAny>,
    window: Option<(f64, f64)>,
    modality: Option<&str>,
) -> Result<DicomImage, Error> {
    let modality = match (modality, window) {
        (Some(m), Some(_)) if !m.eq_ignore_ascii_case("CT") => {
            return Err(bad(format!(
                "a window is used by the CT recipe only; modality {m:?} is clipped by its \
                 percentiles: drop the window or give modality=\"CT\""
            )));
        }
        (Some(m), _) => m.to_string(),
        (None, Some(_)) => "CT".into(),
        (None, None) => "OT".into(),
    };
    let spec = |height: usize, width: usize, rgb: bool| -> Result<PixelSpec, Error> {
        let side = |n: usize| u32::try_from(n).map_err(|_| bad(format!("{n} pixels is too many")));
        Ok(PixelSpec {
            width: side(width)?,
            height: side(height)?,
            frames: 1,
            spacing: None,
            origin: None,
            direction: None,
            modality: Some(modality.clone()),
            window: window.map(|(center, width)| Window { center, width }),
            photometric: Some(if rgb { "RGB" } else { "MONOCHROME2" }.into()),
            description: None,
            uids: None,
            patient: None,
            study: None,
        })
    };
    let shape_of = |shape: &[usize], rgb_ok: bool| -> Result<(usize, usize, bool), Error> {
        match *shape {
            [rows, cols] => Ok((rows, cols, false)),
            [rows, cols, 3] if rgb_ok => Ok((rows, cols, true)),
            _ => Err(bad(format!(
                "an image is (rows, cols), or (rows, cols, 3) of uint8 for RGB; got shape {shape:?}"
            ))),
        }
    };
    let files = if let Some(v) = view::<u8>(array) {
        let (rows, cols, rgb) = shape_of(v.shape(), true)?;
        pixels::instances(&spec(rows, cols, rgb)?, Values::U8(contiguous(&v)?))
    } else if let Some(v) = view::<i16>(array) {
        let (rows, cols, _) = shape_of(v.shape(), false)?;
        pixels::instances(&spec(rows, cols, false)?, Values::I16(contiguous(&v)?))
    } else if let Some(v) = view::<u16>(array) {
        let (rows, cols, _) = shape_of(v.shape(), false)?;
        pixels::instances(&spec(rows, cols, false)?, Values::U16(contiguous(&v)?))
    } else if let Some(v) = view::<f32>(array) {
        let (rows, cols, _) = shape_of(v.shape(), false)?;
        pixels::instances(&spec(rows, cols, false)?, Values::F32(contiguous(&v)?))
    } else {
        return Err(bad(format!(
            "an image must be a numpy array of {IMAGE_DTYPES} (or a medfm.Series); got {}: \
             convert it with a.astype(np.float32)",
            describe(array)
        )));
    }?;
    let file = files
        .into_iter()
        .next()
        .ok_or_else(|| bad("the pixels gave no DICOM instance"))?;
    Ok(dicom::read(&file)?)
}

/// Masks read in place: a uint8 (0/1) or bool array, its shape and its elements.
pub(crate) struct Masks<'py> {
    u8s: Option<PyReadonlyArrayDyn<'py, u8>>,
    bools: Option<PyReadonlyArrayDyn<'py, bool>>,
}

impl<'py> Masks<'py> {
    /// `array` as masks: uint8 or bool.
    pub(crate) fn of(array: &Bound<'py, PyAny>) -> Result<Masks<'py>, Error> {
        let masks = Masks {
            u8s: view::<u8>(array),
            bools: view::<bool>(array),
        };
        if masks.u8s.is_none() && masks.bools.is_none() {
            return Err(bad(format!(
                "masks must be a numpy array of uint8 (0/1) or bool; got {}",
                describe(array)
            )));
        }
        Ok(masks)
    }

    pub(crate) fn shape(&self) -> &[usize] {
        match (&self.u8s, &self.bools) {
            (Some(v), _) => v.shape(),
            (_, Some(v)) => v.shape(),
            _ => &[],
        }
    }

    /// The elements as 0/1 bytes (uint8 in place, bools copied); an error for other values.
    pub(crate) fn bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        match (&self.u8s, &self.bools) {
            (Some(v), _) => {
                let values = contiguous(v)?;
                if let Some(i) = values.iter().position(|&b| b > 1) {
                    return Err(bad(format!(
                        "masks must be 0 or 1: element {i} (in memory order) is {}",
                        values[i]
                    )));
                }
                Ok(Cow::Borrowed(values))
            }
            (_, Some(v)) => Ok(Cow::Owned(
                contiguous(v)?.iter().map(|&b| u8::from(b)).collect(),
            )),
            _ => Err(bad("no masks")),
        }
    }
}
