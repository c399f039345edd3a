//! Series: which frames belong together and in what order. One rule for every shell: the
//! CLI's volumes (NIfTI, SEG over a series) and the browser's series list and slice order
//! both come from here.
//!
//! A slice is one frame: single-frame instances give one each, multi-frame instances
//! (Enhanced CT/MR/PET, with their geometry in the per-frame and shared functional groups)
//! one per frame. Slices are ordered by ImagePositionPatient projected on the slice normal
//! n = cross(row direction, column direction) of ImageOrientationPatient; without geometry
//! (ultrasound cine, secondary captures), by InstanceNumber then frame number, with a
//! warning. Slices of one series with different orientations or sizes, or with a position
//! on some slices but not on others, are not a volume: [`order`] refuses them naming an
//! instance, [`group`] (for browsing) falls back to InstanceNumber order and says why.

use dicom_dictionary_std::tags;

use super::{DicomImage, Error};

/// The slices of one series in space.
#[derive(Debug, Clone, PartialEq)]
pub struct Slices {
    /// `(image, frame)` of every slice in order: the image is an index into the images
    /// given to [`order`].
    pub order: Vec<(usize, u32)>,
    /// Position of each ordered slice along `normal` (mm), when every slice has its
    /// ImagePositionPatient and the series its ImageOrientationPatient.
    pub along: Option<Vec<f64>>,
    /// ImagePositionPatient of the first ordered slice (LPS, mm), when known.
    pub origin: Option<[f64; 3]>,
    /// Row direction (ImageOrientationPatient's first triplet; x axis when unknown).
    pub row_dir: [f64; 3],
    /// Column direction (the second triplet; y axis when unknown).
    pub col_dir: [f64; 3],
    /// `cross(row_dir, col_dir)`.
    pub normal: [f64; 3],
    /// What was assumed (no orientation, no positions).
    pub warnings: Vec<String>,
}

fn floats(img: &DicomImage, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    img.obj
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
}

/// A geometry attribute of one frame: top level (classic images), else the frame's
/// functional group `group` (per-frame, then shared).
pub(super) fn frame_floats(
    img: &DicomImage,
    frame: u32,
    group: dicom_core::Tag,
    tag: dicom_core::Tag,
) -> Option<Vec<f64>> {
    floats(img, tag).or_else(|| {
        super::lut::functional_groups(&img.obj, frame, group)
            .find_map(|item| item.get(tag)?.to_multi_float64().ok())
    })
}

pub(super) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(super) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn orientation(img: &DicomImage, frame: u32) -> Option<Vec<f64>> {
    frame_floats(
        img,
        frame,
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    )
    .filter(|v| v.len() == 6)
}

fn position(img: &DicomImage, frame: u32) -> Option<[f64; 3]> {
    frame_floats(
        img,
        frame,
        tags::PLANE_POSITION_SEQUENCE,
        tags::IMAGE_POSITION_PATIENT,
    )
    .filter(|v| v.len() == 3)
    .map(|v| [v[0], v[1], v[2]])
}

/// Every `(image, frame)` ordered by InstanceNumber (the image's index when absent), the
/// frames of one instance in their order after it.
fn by_instance_number(images: &[&DicomImage]) -> Vec<(usize, u32)> {
    let mut keyed: Vec<((f64, u32), (usize, u32))> = images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| {
            let n = floats(img, tags::INSTANCE_NUMBER)
                .and_then(|v| v.first().copied())
                .filter(|n| n.is_finite())
                .unwrap_or(i as f64);
            (0..img.meta.frames).map(move |f| ((n, f), (i, f)))
        })
        .collect();
    // Stable: equal InstanceNumbers keep the order the images were given in.
    keyed.sort_by(|a, b| a.0.0.total_cmp(&b.0.0).then(a.0.1.cmp(&b.0.1)));
    keyed.into_iter().map(|(_, s)| s).collect()
}

/// Which of some images are first copies of their instance ([`first_copies`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FirstCopies {
    /// Indices of the images kept (each instance's first copy, and every image without a
    /// SOP Instance UID), ascending.
    pub kept: Vec<usize>,
    /// Indices of the images passed over (a later copy of a kept instance), ascending.
    pub copies: Vec<usize>,
    /// One for each copy passed over, naming its instance.
    pub warnings: Vec<String>,
}

/// The rule for an instance given more than once (the same file opened twice, a copy
/// under another name, another encoding of it): it is one instance, and counts once, as
/// its first copy. Images without a SOP Instance UID are all kept.
pub fn first_copies(images: &[&DicomImage]) -> FirstCopies {
    let mut seen = std::collections::HashSet::new();
    let mut out = FirstCopies::default();
    for (i, img) in images.iter().enumerate() {
        let uid = img.meta.sop_instance_uid.as_str();
        if uid.is_empty() || seen.insert(uid) {
            out.kept.push(i);
        } else {
            out.copies.push(i);
            out.warnings.push(format!(
                "instance {uid} was given more than once: its first copy is used"
            ));
        }
    }
    out
}

/// Order the slices of one series (images of one SeriesInstanceUID, in any order) in
/// space, each instance once ([`first_copies`]). Refuses an empty list, images of two
/// series, and slices with different orientations, naming the instances.
pub fn order(images: &[&DicomImage]) -> Result<Slices, Error> {
    let FirstCopies {
        kept,
        copies,
        warnings,
    } = first_copies(images);
    if copies.is_empty() {
        return order_distinct(images);
    }
    let distinct: Vec<&DicomImage> = kept.iter().map(|&i| images[i]).collect();
    let mut slices = order_distinct(&distinct)?;
    for (i, _) in &mut slices.order {
        *i = kept[*i];
    }
    slices.warnings.extend(warnings);
    Ok(slices)
}

/// [`order`] of images that are each another instance.
fn order_distinct(images: &[&DicomImage]) -> Result<Slices, Error> {
    let first = images
        .first()
        .ok_or_else(|| Error::Volume("no images in the series".into()))?;
    let series = &first.meta.series_instance_uid;
    if let Some(other) = images
        .iter()
        .find(|img| img.meta.series_instance_uid != *series)
    {
        return Err(Error::Volume(format!(
            "images of two series ({series} and {}): one series at a time",
            other.meta.series_instance_uid
        )));
    }
    let slices: Vec<(usize, u32)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| (0..img.meta.frames).map(move |f| (i, f)))
        .collect();
    let mut warnings = Vec::new();
    let iop = slices.first().and_then(|&(i, f)| orientation(images[i], f));
    if let Some(v0) = &iop {
        for &(i, f) in &slices {
            let v = orientation(images[i], f).unwrap_or_default();
            if v.len() != 6 || v.iter().zip(v0).any(|(a, b)| (a - b).abs() > 1e-4) {
                return Err(Error::Geometry(format!(
                    "slices of series {series} have different orientations (e.g. radial or \
                     localizer slices): instance {} frame {f} is not in the plane of instance {} \
                     frame 0",
                    images[i].meta.sop_instance_uid, first.meta.sop_instance_uid
                )));
            }
        }
    }
    let (row_dir, col_dir) = match &iop {
        Some(v) => ([v[0], v[1], v[2]], [v[3], v[4], v[5]]),
        None => {
            warnings.push("no ImageOrientationPatient: axial identity orientation assumed".into());
            ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        }
    };
    let normal = cross(row_dir, col_dir);
    let (rows, cols) = (first.meta.rows, first.meta.cols);
    if let Some(other) = images
        .iter()
        .find(|img| (img.meta.rows, img.meta.cols) != (rows, cols))
    {
        return Err(Error::Geometry(format!(
            "slices of series {series} have different sizes: instance {} is {}x{}, instance {} \
             {cols}x{rows}",
            other.meta.sop_instance_uid,
            other.meta.cols,
            other.meta.rows,
            first.meta.sop_instance_uid
        )));
    }
    let found: Vec<Option<[f64; 3]>> = slices
        .iter()
        .map(|&(i, f)| position(images[i], f))
        .collect();
    // Some slices placed and others not: their order cannot be known.
    if iop.is_some()
        && found.iter().any(Option::is_some)
        && let Some(k) = found.iter().position(Option::is_none)
    {
        let (i, f) = slices[k];
        return Err(Error::Geometry(format!(
            "instance {} frame {f} of series {series} has no ImagePositionPatient while other \
             slices have one: the slices cannot be put in order",
            images[i].meta.sop_instance_uid
        )));
    }
    let positions: Option<Vec<[f64; 3]>> = found.into_iter().collect();
    match (positions, &iop) {
        (Some(p), Some(_)) => {
            let mut keyed: Vec<(f64, usize)> = p
                .iter()
                .enumerate()
                .map(|(k, x)| (dot(*x, normal), k))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok(Slices {
                order: keyed.iter().map(|&(_, k)| slices[k]).collect(),
                along: Some(keyed.iter().map(|&(d, _)| d).collect()),
                origin: keyed.first().map(|&(_, k)| p[k]),
                row_dir,
                col_dir,
                normal,
                warnings,
            })
        }
        _ => {
            warnings.push(
                "no ImagePositionPatient: slices ordered by InstanceNumber, then frame".into(),
            );
            Ok(Slices {
                order: by_instance_number(images),
                along: None,
                origin: None,
                row_dir,
                col_dir,
                normal,
                warnings,
            })
        }
    }
}

/// One series of a set of opened images, as a viewer lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Series {
    /// Series Instance UID (`image-N` for an image without one: it is its own series).
    pub uid: String,
    /// Study Instance UID.
    pub study: String,
    /// Modality of the first image.
    pub modality: String,
    /// Series Description of the first image.
    pub description: String,
    /// Rows of the first image.
    pub rows: u32,
    /// Columns of the first image.
    pub cols: u32,
    /// `(image, frame)` of every frame in display order (image: index into the images
    /// given to [`group`]).
    pub frames: Vec<(usize, u32)>,
    /// Images of the series that repeat an instance listed ([`first_copies`]): not in
    /// `frames`.
    pub copies: Vec<usize>,
    /// Why the order is not the spatial one, or what it assumed.
    pub warnings: Vec<String>,
}

/// Group images into series (by SeriesInstanceUID, in the order each series is first
/// seen) and order each one's frames for browsing: in space by [`order`] when it can,
/// else by InstanceNumber then frame with [`order`]'s reason as a warning. Never fails:
/// every frame of every instance is listed once (an instance given again: its first copy,
/// [`first_copies`], the others in `copies`, with a warning).
pub fn group(images: &[&DicomImage]) -> Vec<Series> {
    let mut keys: Vec<String> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let uid = &img.meta.series_instance_uid;
        let key = if uid.is_empty() {
            format!("image-{i}")
        } else {
            uid.clone()
        };
        match keys.iter().position(|k| *k == key) {
            Some(s) => members[s].push(i),
            None => {
                keys.push(key);
                members.push(vec![i]);
            }
        }
    }
    keys.into_iter()
        .zip(members)
        .map(|(uid, all)| {
            let given: Vec<&DicomImage> = all.iter().map(|&i| images[i]).collect();
            let firsts = first_copies(&given);
            let idx: Vec<usize> = firsts.kept.iter().map(|&k| all[k]).collect();
            let copies: Vec<usize> = firsts.copies.iter().map(|&k| all[k]).collect();
            let mine: Vec<&DicomImage> = idx.iter().map(|&i| images[i]).collect();
            let (local, mut warnings) = match order_distinct(&mine) {
                Ok(s) => (s.order, s.warnings),
                Err(e) => (
                    by_instance_number(&mine),
                    vec![format!("{e}; frames listed by InstanceNumber")],
                ),
            };
            warnings.extend(firsts.warnings);
            let m = &mine[0].meta;
            Series {
                uid,
                study: m.study_instance_uid.clone(),
                modality: m.modality.clone(),
                description: m.series_description.clone(),
                rows: m.rows,
                cols: m.cols,
                frames: local.into_iter().map(|(k, f)| (idx[k], f)).collect(),
                copies,
                warnings,
            }
        })
        .collect()
}
