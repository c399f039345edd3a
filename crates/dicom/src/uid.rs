//! DICOM UIDs as names: the check every UID passes before it becomes part of a URL or a
//! file name (standalone: the fuzz targets include this file).

/// Whether `s` can be a DICOM UID (PS3.5 9.1): 1 to 64 characters, digits and dots,
/// no empty component. Every UID that becomes part of a URL or a file name passes here
/// first (no `/`, no `..`).
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}
