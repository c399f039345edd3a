//! DICOM Segmentation (SEG) writer: a binary SEG derived from one frame of a source image,
//! or from several frames of one series (a volume), with one or several segments
//! (PS3.3 A.51, C.8.20).
//!
//! What it holds: the source's patient and study attributes (copied, not altered), a new
//! series and instance, the source's frame of reference and geometry (pixel measures,
//! plane orientation and position), the segments (numbered from 1, each SegmentAlgorithmType
//! SEMIAUTOMATIC, SegmentAlgorithmName "LiteMedSAM", its label and, when given, its colour
//! as RecommendedDisplayCIELabValue), per-frame functional groups referencing the segment
//! and the source instance (and frame) with SpatialLocationsPreserved YES, a Common Instance Reference to
//! the source series, and 1-bit pixels packed LSB first, frames back to back. Explicit VR Little Endian.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::part10::{EXPLICIT_VR_LE, el, part10};
use super::series::{cross, dot};
use super::{DicomImage, Error};

mod colour;
mod derived;
pub use colour::{PALETTE, cielab};
use derived::{DerivedUids, content_date_time};

/// SOP Class UID of Segmentation Storage.
pub const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Describes one segment.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// SegmentLabel, e.g. "Kidney".
    pub label: String,
    /// Algorithm name (SegmentAlgorithmName).
    pub algorithm: String,
    /// Algorithm version (written in SoftwareVersions and the algorithm identification).
    pub version: String,
    /// Display colour as sRGB, written as RecommendedDisplayCIELabValue (see [`cielab`]);
    /// `None` writes none.
    pub color: Option<[u8; 3]>,
}

impl Default for SegmentInfo {
    fn default() -> Self {
        Self {
            label: "Segment 1".into(),
            algorithm: "LiteMedSAM".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            color: None,
        }
    }
}

/// One segment of a SEG: its description and its frames (in series order).
#[derive(Clone)]
pub struct Segment<'a> {
    /// Label, algorithm, colour.
    pub info: SegmentInfo,
    /// The frames of the source series it covers, at least one.
    pub frames: Vec<SegFrame<'a>>,
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// Pack a 0/1 mask (row-major) into DICOM 1-bit pixel data: LSB first, padded to even length.
pub fn pack_bits(mask: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; mask.len().div_ceil(8)];
    for (i, &m) in mask.iter().enumerate() {
        if m != 0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

impl DicomImage {
    /// A clone of a source element, if present.
    fn copy(&self, tag: Tag) -> Option<DataElement<InMemDicomObject>> {
        self.obj.element_opt(tag).ok().flatten().cloned()
    }

    /// A source element as text without padding (UIDs), if present.
    fn text(&self, tag: Tag) -> Option<String> {
        self.copy(tag).and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches('\0').to_string())
        })
    }

    /// A source element's clone, or an empty (type 2) element of the given VR.
    fn copy_or_empty(&self, tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
        self.copy(tag)
            .unwrap_or_else(|| DataElement::new(tag, vr, PrimitiveValue::Empty))
    }

    /// An element of a frame's functional group `group` (per-frame, then shared), if present.
    fn functional_group_item(
        &self,
        group: Tag,
        frame: u32,
        inner: Tag,
    ) -> Option<DataElement<InMemDicomObject>> {
        super::lut::functional_groups(&self.obj, frame, group).find_map(|it| it.get(inner).cloned())
    }

    /// Geometry element of a frame: top level (classic images) or functional groups (enhanced).
    fn geometry(&self, frame: u32, group: Tag, tag: Tag) -> Option<DataElement<InMemDicomObject>> {
        self.copy(tag)
            .or_else(|| self.functional_group_item(group, frame, tag))
    }
}

/// One frame of a SEG: the source image, its frame (0-based) and the mask over it
/// (0/1 per pixel, `rows * cols`).
#[derive(Clone, Copy)]
pub struct SegFrame<'a> {
    /// The segmented image.
    pub source: &'a DicomImage,
    /// Its frame (0-based).
    pub frame: u32,
    /// 0/1 per pixel.
    pub mask: &'a [u8],
}

/// Write a binary SEG for `mask` (0/1 per pixel, `rows * cols`) over `frame` of `source`.
///
/// # Returns
/// The bytes of a Part 10 file (preamble, file meta, data set).
pub fn write_seg(
    source: &DicomImage,
    frame: u32,
    mask: &[u8],
    info: &SegmentInfo,
) -> Result<Vec<u8>, Error> {
    write_seg_frames(
        &[SegFrame {
            source,
            frame,
            mask,
        }],
        info,
    )
}

/// Write one binary SEG over several frames of one series (a volume: the slices of a
/// classic series, or the frames of an Enhanced instance), one segment. Every source must
/// share the study, series, frame of reference, size and orientation; frames are written
/// in the given order (pass them sorted along the slice normal, as
/// [`super::volume::assemble`] orders them), with their own Image Position and a
/// reference to their source instance and frame.
///
/// # Returns
/// The bytes of a Part 10 file (preamble, file meta, data set).
pub fn write_seg_frames(frames: &[SegFrame], info: &SegmentInfo) -> Result<Vec<u8>, Error> {
    write_seg_segments(&[Segment {
        info: info.clone(),
        frames: frames.to_vec(),
    }])
}

/// Write one binary SEG with several segments over frames of one series, numbered 1, 2, ...
/// in the given order. Each segment's frames are written together, in the order given
/// (pass them sorted along the slice normal), segment after segment, as highdicom writes
/// them; two segments may cover the same source frame (a binary SEG allows overlap). The
/// checks and geometry of [`write_seg_frames`] hold over all frames of all segments.
///
/// # Returns
/// The bytes of a Part 10 file (preamble, file meta, data set).
pub fn write_seg_segments(segments: &[Segment]) -> Result<Vec<u8>, Error> {
    let _span = tracing::info_span!("write", what = "seg").entered();
    if segments.is_empty() {
        return Err(Error::Seg("a SEG needs at least one segment".into()));
    }
    if segments.len() > usize::from(u16::MAX) {
        return Err(Error::Seg(format!(
            "{} segments: a SEG holds at most 65535",
            segments.len()
        )));
    }
    if let Some(k) = segments.iter().position(|s| s.frames.is_empty()) {
        return Err(Error::Seg(format!(
            "segment {} (\"{}\") has no frame",
            k + 1,
            segments[k].info.label
        )));
    }
    // Every frame with its segment number (1-based).
    let numbered: Vec<(u16, SegFrame)> = segments
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.frames.iter().map(move |f| (k as u16 + 1, *f)))
        .collect();
    let frames: Vec<SegFrame> = numbered.iter().map(|&(_, f)| f).collect();
    let frames = &frames[..];
    let info = &segments[0].info;
    let first = &frames[0];
    let source = first.source;
    let (rows, cols) = (source.meta.rows, source.meta.cols);
    // Rows and Columns are US: a source claiming more (a UL in a hostile file) cannot
    // have a SEG.
    let (Ok(rows16), Ok(cols16)) = (u16::try_from(rows), u16::try_from(cols)) else {
        return Err(Error::Seg(format!(
            "the source image is {cols}x{rows}: a SEG's Rows and Columns are at most 65535"
        )));
    };
    let classes = check_frames(frames)?;
    let uids = DerivedUids::of(segments);
    let (sop_uid, series_uid, dim_uid) =
        (uids.uid("sop"), uids.uid("series"), uids.uid("dimension"));
    let (date, time) = content_date_time(source);

    let mut obj = source_and_series_modules(source, &sop_uid, &series_uid, &info.version);
    // Frame of reference.
    let for_uid = source.copy(tags::FRAME_OF_REFERENCE_UID);
    if let Some(f) = &for_uid {
        obj.put(f.clone());
        obj.put(source.copy_or_empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO));
    }
    // General image / segmentation image.
    obj.put(el(tags::INSTANCE_NUMBER, VR::IS, "1"));
    obj.put(source.copy_or_empty(tags::PATIENT_ORIENTATION, VR::CS));
    obj.put(el(tags::CONTENT_DATE, VR::DA, date.as_str()));
    obj.put(el(tags::CONTENT_TIME, VR::TM, time.as_str()));
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        dicom_value!(Strs, ["DERIVED", "PRIMARY"]),
    ));
    obj.put(el(tags::CONTENT_LABEL, VR::CS, "MEDFM"));
    obj.put(el(
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "Semi-automatic segmentation from a box/point prompt",
    ));
    obj.put(DataElement::new(
        tags::CONTENT_CREATOR_NAME,
        VR::PN,
        PrimitiveValue::Empty,
    ));
    obj.put(el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"));
    obj.put(el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));
    // Image pixel: 1 bit per pixel.
    obj.put(el(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    obj.put(el(tags::ROWS, VR::US, PrimitiveValue::from(rows16)));
    obj.put(el(tags::COLUMNS, VR::US, PrimitiveValue::from(cols16)));
    obj.put(el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(1u16)));
    obj.put(el(tags::BITS_STORED, VR::US, PrimitiveValue::from(1u16)));
    obj.put(el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(0u16)));
    obj.put(el(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(el(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        frames.len().to_string().as_str(),
    ));
    // The segments.
    let items = segments
        .iter()
        .enumerate()
        .map(|(k, s)| segment_item(k as u16 + 1, &s.info))
        .collect();
    obj.put(seq(tags::SEGMENT_SEQUENCE, items));
    // Dimensions: segment number, then (with geometry) image position.
    let position = |f: &SegFrame| {
        f.source.geometry(
            f.frame,
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
        )
    };
    let orientation = |f: &SegFrame| {
        f.source.geometry(
            f.frame,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
    };
    let spacing = |f: &SegFrame| {
        f.source
            .geometry(f.frame, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
    };
    let thickness = source.geometry(
        first.frame,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::SLICE_THICKNESS,
    );
    let floats = |e: Option<DataElement<InMemDicomObject>>| {
        e.and_then(|e| e.to_multi_float64().ok())
            .unwrap_or_default()
    };
    // Geometry goes in only when every frame has it and orientation and spacing are
    // shared (they sit in the shared functional groups).
    let geometric = for_uid.is_some()
        && frames.iter().all(|f| {
            position(f).is_some()
                && orientation(f).is_some()
                && spacing(f).is_some()
                && floats(orientation(f))
                    .iter()
                    .zip(floats(orientation(first)))
                    .all(|(a, b)| (a - b).abs() < 1e-4)
                && floats(spacing(f)) == floats(spacing(first))
        });
    // Frames without a patient frame of reference (ultrasound cine, 2D+t, captures) are
    // indexed by segment only, each referencing its source frame, as highdicom writes
    // them; frames in a frame of reference must place themselves in it.
    if frames.len() > 1 && !geometric && for_uid.is_some() {
        return Err(Error::Seg(
            "a multi-frame SEG of images in a frame of reference needs the position, \
             orientation and pixel spacing of every source frame (orientation and spacing \
             shared)"
                .into(),
        ));
    }
    obj.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([el(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            dim_uid.as_str(),
        )])],
    ));
    let dim = |pointer: Tag, group: Tag| {
        InMemDicomObject::from_element_iter([
            el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_uid.as_str()),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::from(pointer),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::from(group),
            ),
        ])
    };
    let mut dims = vec![dim(
        tags::REFERENCED_SEGMENT_NUMBER,
        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
    )];
    if geometric {
        dims.push(dim(
            tags::IMAGE_POSITION_PATIENT,
            tags::PLANE_POSITION_SEQUENCE,
        ));
    }
    obj.put(seq(tags::DIMENSION_INDEX_SEQUENCE, dims));
    // Shared functional groups: pixel measures and orientation.
    let mut shared = InMemDicomObject::new_empty();
    if geometric {
        let mut measures = InMemDicomObject::new_empty();
        measures.put(spacing(first).expect("checked"));
        measures
            .put(thickness.unwrap_or_else(|| DataElement::new(tags::SLICE_THICKNESS, VR::DS, "1")));
        shared.put(seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]));
        shared.put(seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                orientation(first).expect("checked")
            ])],
        ));
    }
    obj.put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]));
    // Dimension index of each frame's position: its rank among the distinct positions
    // along the slice normal (1-based).
    let normal = match floats(orientation(first))[..] {
        [a, b, c, d, e, f] => cross([a, b, c], [d, e, f]),
        _ => [0.0, 0.0, 1.0],
    };
    let along: Vec<f64> = frames
        .iter()
        .map(|f| match floats(position(f))[..] {
            [x, y, z] => dot([x, y, z], normal),
            _ => 0.0,
        })
        .collect();
    let mut distinct = along.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    // Per-frame functional groups: derivation, frame content, position, segment.
    let mut per_frames = Vec::with_capacity(frames.len());
    let mut referenced_instances: Vec<(String, String)> = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let class = classes[k].clone();
        let uid = f.source.meta.sop_instance_uid.clone();
        if !referenced_instances.iter().any(|(_, u)| *u == uid) {
            referenced_instances.push((class.clone(), uid.clone()));
        }
        let mut source_ref = InMemDicomObject::from_element_iter([
            el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class.as_str()),
            el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid.as_str()),
            el(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
            seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            ),
        ]);
        if f.source.meta.frames > 1 {
            source_ref.put(el(
                tags::REFERENCED_FRAME_NUMBER,
                VR::IS,
                (f.frame + 1).to_string().as_str(),
            ));
        }
        let derivation = InMemDicomObject::from_element_iter([
            seq(
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code("113076", "DCM", "Segmentation")],
            ),
            seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_ref]),
        ]);
        let number = numbered[k].0;
        let index_values: Vec<u32> = if geometric {
            let rank = distinct
                .iter()
                .position(|d| (d - along[k]).abs() < 1e-6)
                .unwrap_or(0);
            vec![u32::from(number), rank as u32 + 1]
        } else {
            vec![u32::from(number)]
        };
        let mut per_frame = InMemDicomObject::from_element_iter([
            seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]),
            seq(
                tags::FRAME_CONTENT_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([DataElement::new(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::U32(index_values.into()),
                )])],
            ),
            seq(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([el(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    VR::US,
                    PrimitiveValue::from(number),
                )])],
            ),
        ]);
        if geometric {
            per_frame.put(seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    position(f).expect("checked")
                ])],
            ));
        }
        per_frames.push(per_frame);
    }
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frames));
    // Common instance reference to the source series.
    let referenced = InMemDicomObject::from_element_iter([
        el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            source.meta.series_instance_uid.as_str(),
        ),
        seq(
            tags::REFERENCED_INSTANCE_SEQUENCE,
            referenced_instances
                .iter()
                .map(|(class, uid)| {
                    InMemDicomObject::from_element_iter([
                        el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class.as_str()),
                        el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid.as_str()),
                    ])
                })
                .collect(),
        ),
    ]);
    obj.put(seq(tags::REFERENCED_SERIES_SEQUENCE, vec![referenced]));
    // Frames follow each other bit by bit (PS3.5 8.1.1: no padding between frames).
    let all: Vec<u8> = frames.iter().flat_map(|f| f.mask.iter().copied()).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pack_bits(&all)),
    ));

    part10(obj, SEG_SOP_CLASS, &sop_uid, EXPLICIT_VR_LE, "the SEG").map_err(Error::Seg)
}

/// The SEG's SOP Common, patient and study (copied from `source`), series and equipment
/// modules.
fn source_and_series_modules(
    source: &DicomImage,
    sop_uid: &str,
    series_uid: &str,
    version: &str,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    // SOP Common.
    obj.put(el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    obj.put(el(tags::SOP_CLASS_UID, VR::UI, SEG_SOP_CLASS));
    obj.put(el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid));
    // Patient and study, copied from the source.
    obj.put(source.copy_or_empty(tags::PATIENT_NAME, VR::PN));
    obj.put(source.copy_or_empty(tags::PATIENT_ID, VR::LO));
    obj.put(source.copy_or_empty(tags::PATIENT_BIRTH_DATE, VR::DA));
    obj.put(source.copy_or_empty(tags::PATIENT_SEX, VR::CS));
    obj.put(source.copy_or_empty(tags::STUDY_INSTANCE_UID, VR::UI));
    obj.put(source.copy_or_empty(tags::STUDY_DATE, VR::DA));
    obj.put(source.copy_or_empty(tags::STUDY_TIME, VR::TM));
    obj.put(source.copy_or_empty(tags::REFERRING_PHYSICIAN_NAME, VR::PN));
    obj.put(source.copy_or_empty(tags::STUDY_ID, VR::SH));
    obj.put(source.copy_or_empty(tags::ACCESSION_NUMBER, VR::SH));
    // Series and equipment.
    obj.put(el(tags::MODALITY, VR::CS, "SEG"));
    obj.put(el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    obj.put(el(tags::SERIES_NUMBER, VR::IS, "300"));
    obj.put(el(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "LiteMedSAM segmentation (medfm)",
    ));
    obj.put(el(tags::MANUFACTURER, VR::LO, "medfm"));
    obj.put(el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "medfm"));
    obj.put(el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"));
    obj.put(el(tags::SOFTWARE_VERSIONS, VR::LO, version));
    obj
}

/// The checks every frame of a SEG passes against the first: the same size, a mask of that
/// size, a frame the source has, the source's instance and series UIDs, the same study,
/// series and frame of reference.
///
/// # Returns
/// The SOP Class UID of each frame's source, in the frames' order (read once).
fn check_frames(frames: &[SegFrame]) -> Result<Vec<String>, Error> {
    let source = frames[0].source;
    let (rows, cols) = (source.meta.rows, source.meta.cols);
    let for_of_first = source.text(tags::FRAME_OF_REFERENCE_UID);
    let mut classes = Vec::with_capacity(frames.len());
    for (k, f) in frames.iter().enumerate() {
        let m = &f.source.meta;
        if (m.rows, m.cols) != (rows, cols) {
            return Err(Error::Seg(format!(
                "SEG frame {k}: source is {}x{}, the first {rows}x{cols}",
                m.rows, m.cols
            )));
        }
        if f.mask.len() != rows as usize * cols as usize {
            return Err(Error::Seg(format!(
                "mask has {} pixels, the image {rows}x{cols}",
                f.mask.len()
            )));
        }
        if f.frame >= m.frames {
            return Err(Error::Frame {
                frame: f.frame,
                frames: m.frames,
            });
        }
        if m.sop_instance_uid.is_empty() || m.series_instance_uid.is_empty() {
            return Err(Error::Attribute {
                tag: "(0008,0018)".into(),
                name: "SOPInstanceUID",
                problem: "the source image lacks its instance or series UID".into(),
            });
        }
        if m.series_instance_uid != source.meta.series_instance_uid
            || m.study_instance_uid != source.meta.study_instance_uid
        {
            return Err(Error::Seg(format!(
                "SEG frame {k} comes from another study or series: one SEG covers one series"
            )));
        }
        classes.push(
            f.source
                .text(tags::SOP_CLASS_UID)
                .ok_or_else(|| Error::Attribute {
                    tag: "(0008,0016)".into(),
                    name: "SOPClassUID",
                    problem: "missing in the source image".into(),
                })?,
        );
        if f.source.text(tags::FRAME_OF_REFERENCE_UID) != for_of_first {
            return Err(Error::Seg(format!(
                "SEG frame {k} has another frame of reference than the first"
            )));
        }
    }
    Ok(classes)
}

/// One item of the Segment Sequence: number, label, colour, algorithm, properties.
fn segment_item(number: u16, info: &SegmentInfo) -> InMemDicomObject {
    let algorithm_id = InMemDicomObject::from_element_iter([
        seq(
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            vec![code("123109", "DCM", "Manual Processing")],
        ),
        el(tags::ALGORITHM_NAME, VR::LO, info.algorithm.as_str()),
        el(tags::ALGORITHM_VERSION, VR::LO, info.version.as_str()),
    ]);
    let mut item = InMemDicomObject::from_element_iter([
        el(tags::SEGMENT_NUMBER, VR::US, PrimitiveValue::from(number)),
        el(tags::SEGMENT_LABEL, VR::LO, info.label.as_str()),
        el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "SEMIAUTOMATIC"),
        el(
            tags::SEGMENT_ALGORITHM_NAME,
            VR::LO,
            info.algorithm.as_str(),
        ),
        seq(
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![algorithm_id],
        ),
        seq(
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code("91723000", "SCT", "Anatomical Structure")],
        ),
        seq(
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code("85756007", "SCT", "Tissue")],
        ),
    ]);
    if let Some(rgb) = info.color {
        item.put(el(
            tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
            VR::US,
            PrimitiveValue::U16(cielab(rgb).to_vec().into()),
        ));
    }
    item
}

#[cfg(test)]
mod tests;
