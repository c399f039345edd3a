//! The envelope of every Part 10 file medfm writes (SEGs, instances made from pixels,
//! retrieved frames; the node's spool writes the same identity by hand): medfm's
//! implementation UID and version in the file meta, and the UIDs medfm derives from
//! content.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

/// Explicit VR Little Endian.
pub(crate) const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implementation Class UID of medfm (UUID-derived, `2.25.` root), in the file meta of
/// every Part 10 file medfm writes (SEGs, retrieved frames, the node's spool).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.270138620468451637006410264637185546813";
/// ImplementationVersionName beside it.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("MEDFM_", env!("CARGO_PKG_VERSION"));

/// A data element of an object medfm writes.
pub(crate) fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

/// `obj` as a Part 10 file written by medfm (preamble, file meta with medfm's
/// implementation UID and version, data set in `transfer_syntax`); `what` names it in an
/// error.
pub(crate) fn part10(
    obj: InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    what: &str,
) -> Result<Vec<u8>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| format!("cannot build the file meta group: {e}"))?;
    let mut out = Vec::new();
    obj.with_exact_meta(meta)
        .write_all(&mut out)
        .map_err(|e| format!("cannot encode {what}: {e}"))?;
    Ok(out)
}

/// A UID derived from content: `2.25.` (UUID root) followed by a UUIDv8 (RFC 9562,
/// custom: the first 128 bits of SHA-256 over `parts`, concatenated, with the version and
/// variant bits set) as a decimal integer. Every UID medfm makes comes from here.
pub(crate) fn derived_uid(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let h = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10
    format!("2.25.{}", u128::from_be_bytes(b))
}
