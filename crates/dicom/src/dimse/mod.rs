//! DIMSE command sets (PS3.7 section 9 and annex E): group 0000 in implicit VR little
//! endian, the commands the edge node speaks (C-ECHO and C-STORE, request and response),
//! and the storage SOP classes it accepts.
//!
//! Bytes in, bytes out (target-agnostic, like `dicomweb`): the native shell moves them
//! over the upper layer (dicom-ul 0.10, which has no DIMSE service layer). Each element is
//! tag (group, element: u16 LE), length (u32 LE), value; a set starts with
//! CommandGroupLength (0000,0000).

mod file_meta;
mod storage_classes;

pub use file_meta::{FILE_META_HEAD, FileMeta, FileMetaError, MAX_FILE_META, file_meta};
pub use storage_classes::STORAGE_SOP_CLASSES;

/// A command set that cannot be read, or lacks what its command needs.
#[derive(Debug, thiserror::Error)]
#[error("command set: {0}")]
pub struct Error(String);

impl Error {
    /// A malformed command is the peer's input.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::BadInput
    }
}

type Result<T> = std::result::Result<T, Error>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(Error(format!($($t)*))) };
}

/// C-STORE request (CommandField).
pub const C_STORE_RQ: u16 = 0x0001;
/// C-STORE response.
pub const C_STORE_RSP: u16 = 0x8001;
/// C-ECHO request.
pub const C_ECHO_RQ: u16 = 0x0030;
/// C-ECHO response.
pub const C_ECHO_RSP: u16 = 0x8030;
/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;
/// Verification SOP class.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// DIMSE statuses the node answers with (PS3.4 annex B.2.3, PS3.7 annex C).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (quota, size, disk).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Unrecognized operation (a command the node does not serve).
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

const COMMAND_GROUP_LENGTH: u16 = 0x0000;
const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
const PRIORITY: u16 = 0x0700;
const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;

/// A received command set: its elements by element number (group 0000 only).
#[derive(Debug, Default)]
pub struct Command {
    elements: Vec<(u16, Vec<u8>)>,
}

impl Command {
    /// Read a command set. Refused: an element of another group, a length past the end.
    pub fn read(bytes: &[u8]) -> Result<Command> {
        let mut elements = Vec::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let Some(head) = bytes.get(pos..pos + 8) else {
                bail!("{} stray bytes at its end", bytes.len() - pos);
            };
            let group = u16::from_le_bytes([head[0], head[1]]);
            let element = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if group != 0 {
                bail!("element ({group:04X},{element:04X}) is not of group 0000");
            }
            let start = pos + 8;
            let Some(value) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
                bail!("element (0000,{element:04X}) is longer than the set");
            };
            elements.push((element, value.to_vec()));
            pos = start + len;
        }
        Ok(Command { elements })
    }

    fn get(&self, element: u16) -> Option<&[u8]> {
        self.elements
            .iter()
            .find(|(e, _)| *e == element)
            .map(|(_, v)| v.as_slice())
    }

    fn us(&self, element: u16, name: &str) -> Result<u16> {
        match self.get(element) {
            Some([a, b]) => Ok(u16::from_le_bytes([*a, *b])),
            Some(_) => bail!("{name} is not a 2-byte US"),
            None => bail!("{name} is missing"),
        }
    }

    fn ui(&self, element: u16, name: &str) -> Result<String> {
        let Some(v) = self.get(element) else {
            bail!("{name} is missing");
        };
        let s = std::str::from_utf8(v).map_err(|_| Error(format!("{name} is not text")))?;
        Ok(s.trim_end_matches(['\0', ' ']).to_string())
    }

    /// CommandField (0000,0100).
    pub fn command_field(&self) -> Result<u16> {
        self.us(COMMAND_FIELD, "CommandField")
    }

    /// MessageID (0000,0110).
    pub fn message_id(&self) -> Result<u16> {
        self.us(MESSAGE_ID, "MessageID")
    }

    /// MessageIDBeingRespondedTo (0000,0120).
    pub fn message_id_responded(&self) -> Result<u16> {
        self.us(MESSAGE_ID_BEING_RESPONDED_TO, "MessageIDBeingRespondedTo")
    }

    /// Status (0000,0900).
    pub fn status(&self) -> Result<u16> {
        self.us(STATUS, "Status")
    }

    /// Whether a data set follows the command.
    pub fn has_data_set(&self) -> Result<bool> {
        Ok(self.us(COMMAND_DATA_SET_TYPE, "CommandDataSetType")? != NO_DATA_SET)
    }

    /// AffectedSOPClassUID (0000,0002).
    pub fn affected_sop_class(&self) -> Result<String> {
        self.ui(AFFECTED_SOP_CLASS_UID, "AffectedSOPClassUID")
    }

    /// AffectedSOPInstanceUID (0000,1000).
    pub fn affected_sop_instance(&self) -> Result<String> {
        self.ui(AFFECTED_SOP_INSTANCE_UID, "AffectedSOPInstanceUID")
    }

    /// ErrorComment (0000,0902), when present.
    pub fn error_comment(&self) -> Option<String> {
        self.ui(ERROR_COMMENT, "ErrorComment").ok()
    }
}

/// Writes a command set: elements in ascending order, then the group length in front.
struct Writer {
    body: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer { body: Vec::new() }
    }

    fn raw(mut self, element: u16, value: &[u8]) -> Self {
        self.body.extend_from_slice(&0u16.to_le_bytes());
        self.body.extend_from_slice(&element.to_le_bytes());
        self.body
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.body.extend_from_slice(value);
        self
    }

    fn us(self, element: u16, v: u16) -> Self {
        self.raw(element, &v.to_le_bytes())
    }

    /// UI: padded to even length with NUL.
    fn ui(self, element: u16, uid: &str) -> Self {
        let mut v = uid.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        self.raw(element, &v)
    }

    /// LO: at most 64 characters of printable ASCII, padded to even length with a space.
    fn lo(self, element: u16, text: &str) -> Self {
        let mut v: Vec<u8> = text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c as u8
                } else {
                    b'?'
                }
            })
            .filter(|b| *b != b'\\')
            .take(64)
            .collect();
        if v.len() % 2 == 1 {
            v.push(b' ');
        }
        self.raw(element, &v)
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 12);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&COMMAND_GROUP_LENGTH.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// C-ECHO-RSP (success).
pub fn echo_rsp(message_id: u16) -> Vec<u8> {
    Writer::new()
        .ui(AFFECTED_SOP_CLASS_UID, VERIFICATION)
        .us(COMMAND_FIELD, C_ECHO_RSP)
        .us(MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .us(COMMAND_DATA_SET_TYPE, NO_DATA_SET)
        .us(STATUS, status::SUCCESS)
        .finish()
}

/// C-ECHO-RQ.
pub fn echo_rq(message_id: u16) -> Vec<u8> {
    Writer::new()
        .ui(AFFECTED_SOP_CLASS_UID, VERIFICATION)
        .us(COMMAND_FIELD, C_ECHO_RQ)
        .us(MESSAGE_ID, message_id)
        .us(COMMAND_DATA_SET_TYPE, NO_DATA_SET)
        .finish()
}

/// A response to a request: C-STORE-RSP or the response of any other command field
/// (`command | 0x8000`, for "unrecognized operation"), with an error comment unless the
/// status is success.
pub fn response(
    command: u16,
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    status_code: u16,
    comment: &str,
) -> Vec<u8> {
    let mut w = Writer::new();
    if !sop_class.is_empty() {
        w = w.ui(AFFECTED_SOP_CLASS_UID, sop_class);
    }
    w = w
        .us(COMMAND_FIELD, command | 0x8000)
        .us(MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .us(COMMAND_DATA_SET_TYPE, NO_DATA_SET)
        .us(STATUS, status_code);
    if status_code != status::SUCCESS && !comment.is_empty() {
        w = w.lo(ERROR_COMMENT, comment);
    }
    if !sop_instance.is_empty() {
        w = w.ui(AFFECTED_SOP_INSTANCE_UID, sop_instance);
    }
    w.finish()
}

/// C-STORE-RQ (medium priority; a data set follows).
pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    Writer::new()
        .ui(AFFECTED_SOP_CLASS_UID, sop_class)
        .us(COMMAND_FIELD, C_STORE_RQ)
        .us(MESSAGE_ID, message_id)
        .us(PRIORITY, 0)
        .us(COMMAND_DATA_SET_TYPE, 0x0000)
        .ui(AFFECTED_SOP_INSTANCE_UID, sop_instance)
        .finish()
}

/// Whether a C-STORE status counts as stored: success, or a warning (0001, Bxxx; PS3.4
/// B.2.3).
pub fn is_stored(status_code: u16) -> bool {
    status_code == status::SUCCESS || status_code == 0x0001 || status_code & 0xF000 == 0xB000
}

/// Whether `uid` is an accepted storage SOP class.
pub fn is_storage_class(uid: &str) -> bool {
    STORAGE_SOP_CLASSES.iter().any(|(u, _)| *u == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_request_reads_back() {
        let bytes = store_rq(7, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.45");
        let c = Command::read(&bytes).unwrap();
        assert_eq!(c.command_field().unwrap(), C_STORE_RQ);
        assert_eq!(c.message_id().unwrap(), 7);
        assert!(c.has_data_set().unwrap());
        assert_eq!(c.affected_sop_class().unwrap(), "1.2.840.10008.5.1.4.1.1.4");
        assert_eq!(c.affected_sop_instance().unwrap(), "1.2.3.45");
        // Group length = bytes after the group length element.
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            bytes.len() - 12
        );
    }

    #[test]
    fn a_refusal_carries_its_status_and_comment() {
        let bytes = response(
            C_STORE_RQ,
            3,
            "1.2.3",
            "1.2.3.4",
            status::CANNOT_UNDERSTAND,
            "bad\\x",
        );
        let c = Command::read(&bytes).unwrap();
        assert_eq!(c.command_field().unwrap(), C_STORE_RSP);
        assert_eq!(c.message_id_responded().unwrap(), 3);
        assert_eq!(c.status().unwrap(), status::CANNOT_UNDERSTAND);
        assert!(!c.has_data_set().unwrap());
        assert_eq!(c.error_comment().unwrap(), "badx");
        let echo = Command::read(&echo_rsp(9)).unwrap();
        assert_eq!(echo.command_field().unwrap(), C_ECHO_RSP);
        assert_eq!(echo.status().unwrap(), 0);
    }

    #[test]
    fn broken_command_sets_are_refused() {
        let mut bytes = echo_rq(1);
        bytes.truncate(bytes.len() - 1);
        assert!(
            Command::read(&bytes)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
        let mut other = echo_rq(1);
        other[0] = 8;
        assert!(
            Command::read(&other)
                .unwrap_err()
                .to_string()
                .contains("group")
        );
        assert!(Command::read(&[0, 0, 0]).is_err());
        let c = Command::read(&echo_rq(1)[..12]).unwrap();
        assert!(
            c.command_field()
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn the_storage_classes_are_the_storage_ones() {
        for (uid, keyword) in STORAGE_SOP_CLASSES {
            assert!(crate::is_uid(uid), "{uid}");
            assert!(
                keyword.ends_with("Storage") || keyword.contains("Storage"),
                "{keyword}"
            );
        }
        let mut uids: Vec<_> = STORAGE_SOP_CLASSES.iter().map(|(u, _)| *u).collect();
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), STORAGE_SOP_CLASSES.len(), "duplicates");
        for uid in [
            "1.2.840.10008.5.1.4.1.1.2",     // CT
            "1.2.840.10008.5.1.4.1.1.4",     // MR
            "1.2.840.10008.5.1.4.1.1.66.4",  // Segmentation
            "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
            "1.2.840.10008.5.1.4.1.1.481.2", // RT Dose
        ] {
            assert!(is_storage_class(uid), "{uid}");
        }
        for uid in [VERIFICATION, "1.2.840.10008.1.20.1", "1.2.840.10008.1.3.10"] {
            assert!(!is_storage_class(uid), "{uid}");
        }
    }
}
