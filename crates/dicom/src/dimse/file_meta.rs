//! The file meta group of a Part 10 file, read the way a C-STORE SCU needs it: the SOP
//! class, SOP instance and transfer syntax to announce, and where the data set (the bytes
//! that go on the wire) starts.
//!
//! Layout: a 128-byte preamble, `DICM`, (0002,0000) FileMetaInformationGroupLength (UL),
//! then group 0002 elements in explicit VR little endian. The data set starts at the first
//! element of another group, as DCMTK and pydicom read it: the group length is advisory
//! (writers that edit the meta leave it stale, and a group length that ends inside an
//! element would put the data set in the middle of one). An element header or value cut
//! by the end of the bytes, a group over [`MAX_FILE_META`] bytes or a missing UID is
//! refused. Reads nothing past `bytes` and allocates only the three UIDs
//! (fuzz/fuzz_targets/file_meta.rs).

/// A file meta group that cannot be read as a C-STORE SCU needs it.
#[derive(Debug, thiserror::Error)]
#[error("file meta group: {0}")]
pub struct FileMetaError(String);

impl FileMetaError {
    /// A malformed file is its author's input.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::BadInput
    }
}

/// Largest file meta group read (bytes after the group length element): real ones are a
/// few hundred bytes.
pub const MAX_FILE_META: usize = 1 << 16;

/// The bytes before the file meta group's elements: preamble, `DICM`, the group length
/// element.
pub const FILE_META_HEAD: usize = 144;

/// What the file meta group says, and where the data set starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// MediaStorageSOPClassUID (0002,0002).
    pub sop_class: String,
    /// MediaStorageSOPInstanceUID (0002,0003).
    pub sop_instance: String,
    /// TransferSyntaxUID (0002,0010).
    pub transfer_syntax: String,
    /// Offset of the data set in the file: where the group 0002 elements end.
    pub data_set_offset: usize,
}

/// Read the file meta group of `bytes` (a Part 10 file from its preamble on; at least
/// the whole group).
pub fn file_meta(bytes: &[u8]) -> Result<FileMeta, FileMetaError> {
    let err = FileMetaError;
    if bytes.len() < FILE_META_HEAD
        || &bytes[128..132] != b"DICM"
        || bytes[132..140] != [2, 0, 0, 0, b'U', b'L', 4, 0]
    {
        return Err(err(
            "not a Part 10 file with a file meta group length (preamble, DICM, (0002,0000) UL)"
                .into(),
        ));
    }
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]);
    let (mut class, mut instance, mut ts) = (None, None, None);
    let mut pos = FILE_META_HEAD;
    // Group 0002 elements, up to the first of another group or the end of the bytes.
    while pos < bytes.len() {
        if pos - FILE_META_HEAD > MAX_FILE_META {
            return Err(err(format!("longer than {MAX_FILE_META} bytes")));
        }
        let left = bytes.len() - pos;
        if left < 4 {
            return Err(err(format!(
                "the bytes end inside an element header at byte {pos}"
            )));
        }
        let (group, element) = (u16_at(pos), u16_at(pos + 2));
        if group != 0x0002 {
            break;
        }
        // Tag (4) + VR (2) + a 2-byte length, or 2 reserved bytes + a 4-byte length.
        let long = left >= 6
            && matches!(
                &bytes[pos + 4..pos + 6],
                b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC"
            );
        if left < if long { 12 } else { 8 } {
            return Err(err(format!(
                "the bytes end inside the header of (0002,{element:04X})"
            )));
        }
        let (value_at, value_len) = if long {
            let l = u32::from_le_bytes([
                bytes[pos + 8],
                bytes[pos + 9],
                bytes[pos + 10],
                bytes[pos + 11],
            ]);
            (pos + 12, l as usize)
        } else {
            (pos + 8, u16_at(pos + 6) as usize)
        };
        let Some(value) = value_at
            .checked_add(value_len)
            .filter(|e| *e <= bytes.len())
            .map(|e| &bytes[value_at..e])
        else {
            return Err(err(format!(
                "the value of (0002,{element:04X}) ({value_len} bytes) runs past the end"
            )));
        };
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        match element {
            0x0002 => class = Some(text()),
            0x0003 => instance = Some(text()),
            0x0010 => ts = Some(text()),
            _ => {}
        }
        pos = value_at + value_len;
    }
    let need = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| err(format!("no {name}")))
    };
    Ok(FileMeta {
        sop_class: need(class, "MediaStorageSOPClassUID")?,
        sop_instance: need(instance, "MediaStorageSOPInstanceUID")?,
        transfer_syntax: need(ts, "TransferSyntaxUID")?,
        data_set_offset: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file meta group as writers make it, with `data` after it.
    fn file(elements: &[(u16, &[u8; 2], &[u8])], data: &[u8]) -> Vec<u8> {
        let mut group = Vec::new();
        for (element, vr, value) in elements {
            group.extend_from_slice(&2u16.to_le_bytes());
            group.extend_from_slice(&element.to_le_bytes());
            group.extend_from_slice(*vr);
            if *vr == b"OB" {
                group.extend_from_slice(&[0, 0]);
                group.extend_from_slice(&(value.len() as u32).to_le_bytes());
            } else {
                group.extend_from_slice(&(value.len() as u16).to_le_bytes());
            }
            group.extend_from_slice(value);
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(group.len() as u32).to_le_bytes());
        out.extend_from_slice(&group);
        out.extend_from_slice(data);
        out
    }

    fn good() -> Vec<u8> {
        file(
            &[
                (0x0001, b"OB", &[0, 1]),
                (0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
                (0x0003, b"UI", b"1.2.3.4"),
                (0x0010, b"UI", b"1.2.840.10008.1.2.1\0"),
                (0x0013, b"SH", b"MEDFM "),
                (0x0100, b"OB", &[1, 2, 3, 4]),
            ],
            &[8, 0, 0x16, 0, b'U', b'I', 2, 0, b'1', 0],
        )
    }

    #[test]
    fn reads_the_uids_and_the_data_set_offset() {
        let bytes = good();
        let m = file_meta(&bytes).unwrap();
        assert_eq!(m.sop_class, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(m.sop_instance, "1.2.3.4");
        assert_eq!(m.transfer_syntax, "1.2.840.10008.1.2.1");
        assert_eq!(&bytes[m.data_set_offset..][..4], &[8, 0, 0x16, 0]);
    }

    /// What stopped the node's work loop (issue 34): a group length that ends inside the
    /// last element, read with only the group's bytes. Every wrong group length reads
    /// with the data set where group 0002 ends; every cut of the file is refused with a
    /// reason or reads an offset inside it, never a panic.
    #[test]
    fn wrong_group_lengths_and_cuts() {
        let bytes = good();
        let right = file_meta(&bytes).unwrap().data_set_offset;
        let real = u32::from_le_bytes(bytes[140..144].try_into().unwrap());
        for length in (0..real + 40).chain([u32::MAX]) {
            let mut b = bytes.clone();
            b[140..144].copy_from_slice(&length.to_le_bytes());
            assert_eq!(file_meta(&b).unwrap().data_set_offset, right, "{length}");
            // As the node's SCU read it once: the head and the group, nothing more.
            let cut = (FILE_META_HEAD + length as usize).min(b.len());
            match file_meta(&b[..cut]) {
                Ok(m) => assert!(m.data_set_offset <= cut),
                Err(e) => assert!(e.to_string().contains("file meta group"), "{e}"),
            }
        }
        let e = file_meta(&bytes[..right - 2]).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
        for n in 0..bytes.len() {
            if let Ok(m) = file_meta(&bytes[..n]) {
                assert!(m.data_set_offset <= n);
            }
        }
    }

    /// Random byte changes (a fixed-seed generator) in the group: no panic.
    #[test]
    fn mutated_groups_never_panic() {
        let bytes = good();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = 128 + (next() as usize) % (b.len() - 128);
                b[at] = next() as u8;
            }
            let n = (next() as usize) % (b.len() + 1);
            for slice in [&b[..], &b[..n]] {
                if let Ok(m) = file_meta(slice) {
                    assert!(m.data_set_offset <= slice.len());
                }
            }
        }
    }
}
