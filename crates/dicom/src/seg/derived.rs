//! What a SEG derives from its content and never from the clock: its UIDs, its content
//! date and time.

use dicom_dictionary_std::tags;

use super::super::DicomImage;
use super::super::part10::derived_uid;
use super::{Segment, pack_bits};

/// The UIDs of a SEG, derived from what it holds: the same segments over the same source
/// frames give the same SOP Instance, Series and dimension UIDs on every run and machine,
/// so a rerun (a batch resumed, a node job repeated after a crash) writes the same
/// instance, which a PACS recognises, and different content always gets another UID.
///
/// Each is `2.25.` (UUID root) followed by a UUIDv8 (RFC 9562, custom: the first 128 bits
/// of SHA-256 over the content digest and the UID's purpose, version and variant bits
/// set) as a decimal integer.
pub(super) struct DerivedUids {
    digest: [u8; 32],
}

impl DerivedUids {
    /// The digest of `numbered` frames (segment number, frame) of `segments`: each
    /// segment's label, algorithm, version and colour, each frame's source SOP Instance
    /// UID, frame number and mask. Strings and masks are length-prefixed, so no two
    /// contents share an encoding.
    pub(super) fn of(segments: &[Segment]) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"medfm SEG content v1");
        for s in segments {
            field(s.info.label.as_bytes());
            field(s.info.algorithm.as_bytes());
            field(s.info.version.as_bytes());
            field(&s.info.color.map_or_else(Vec::new, |c| c.to_vec()));
            for f in &s.frames {
                field(f.source.meta.sop_instance_uid.as_bytes());
                field(&f.frame.to_le_bytes());
                field(&pack_bits(f.mask));
                field(&(f.mask.len() as u64).to_le_bytes());
            }
        }
        DerivedUids {
            digest: h.finalize().into(),
        }
    }

    /// The UID for `purpose` (`sop`, `series`, `dimension`).
    pub(super) fn uid(&self, purpose: &str) -> String {
        derived_uid(&[&self.digest, purpose.as_bytes()])
    }
}

/// The content date and time of a SEG over `source` (both Type 1): the source's own
/// (ContentDate and ContentTime), else its acquisition's, series', study's or instance
/// creation's, the first with a date (a missing time: `000000`); a source with no date at
/// all (anonymised ones often have none) gives 1970-01-01 00:00:00, the Unix epoch, as an
/// explicit "unknown". Never the clock: rerunning a job gives the same file.
pub(super) fn content_date_time(source: &DicomImage) -> (String, String) {
    [
        (tags::CONTENT_DATE, tags::CONTENT_TIME),
        (tags::ACQUISITION_DATE, tags::ACQUISITION_TIME),
        (tags::SERIES_DATE, tags::SERIES_TIME),
        (tags::STUDY_DATE, tags::STUDY_TIME),
        (tags::INSTANCE_CREATION_DATE, tags::INSTANCE_CREATION_TIME),
    ]
    .into_iter()
    .find_map(|(d, t)| {
        let date = source.text(d).map(|v| v.trim().to_string())?;
        let time = source.text(t).map(|v| v.trim().to_string());
        (!date.is_empty()).then(|| {
            let time = time.filter(|t| !t.is_empty());
            (date, time.unwrap_or_else(|| "000000".into()))
        })
    })
    .unwrap_or_else(|| ("19700101".into(), "000000".into()))
}
