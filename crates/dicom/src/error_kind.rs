//! The kinds of failure: one rule for the CLI's exit codes, the `code` of the JS API's
//! errors and the Python exceptions.

/// What kind of failure an error is: one rule for the CLI's exit codes and the `code` of
/// the JS API's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ErrorKind {
    /// The input is wrong: not DICOM, undecodable, a bad prompt, a bad option (exit 2,
    /// code `bad-input`).
    BadInput,
    /// The input may well be right, but uses what this build does not handle: pixel data
    /// in an encoding without a decoder here (video, JPEG-LS in the browser, 12-bit colour
    /// JPEG), so converting the file first helps (exit 6, code `unsupported`).
    Unsupported,
    /// The weights are missing, unpinned or unreadable (exit 3, code `weights`).
    Weights,
    /// The device failed (exit 4, code `device`).
    Device,
    /// Reading or writing files failed (exit 5, code `io`).
    Io,
    /// A fault of medfm itself, such as a panic caught at a front's boundary (exit 1, code
    /// `internal`).
    Internal,
}

impl ErrorKind {
    /// The CLI's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::Unsupported => 6,
            ErrorKind::Weights => 3,
            ErrorKind::Device => 4,
            ErrorKind::Io => 5,
            ErrorKind::Internal => 1,
        }
    }

    /// The `code` of a JS API error.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad-input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Weights => "weights",
            ErrorKind::Device => "device",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}
