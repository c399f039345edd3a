//! medfm's one error type: every layer's error (DICOM, DICOMweb, DIMSE, model, pipeline,
//! files) converts into [`Error`], which keeps the layer's error as its source, adds what
//! the caller was doing (`context`) and says its [`ErrorKind`]: the one rule behind the
//! CLI's exit codes, the JS API's `code` and the Python exceptions.

use crate::ErrorKind;

/// An error of medfm: its kind, what was being done (outermost first) and the error of
/// the layer that failed.
pub struct Error {
    kind: ErrorKind,
    context: Vec<String>,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A message as an error source.
#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl Error {
    /// An error of `kind` with `message` (what was wrong and what to do).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            context: Vec::new(),
            source: Box::new(Message(message.into())),
        }
    }

    /// Bad input: [`ErrorKind::BadInput`].
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error with `what` (a file, a segment's label, a step) in front of its message.
    pub fn context(mut self, what: impl Into<String>) -> Self {
        self.context.insert(0, what.into());
        self
    }

    /// The kind of any error of medfm's layers found in `e` or its sources: the first
    /// whose kind is known. How the fronts sort errors that reached them through their own
    /// wrappers (anyhow in the CLI).
    pub fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(e) = at {
            let kind = if let Some(e) = e.downcast_ref::<Error>() {
                Some(e.kind)
            } else if let Some(e) = e.downcast_ref::<crate::pipeline::Error>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<crate::model::Error>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<crate::dicom::Error>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<crate::dicomweb::Error>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<crate::dimse::Error>() {
                Some(e.kind())
            } else if e.is::<std::io::Error>() {
                Some(ErrorKind::Io)
            } else {
                None
            };
            if kind.is_some() {
                return kind;
            }
            at = e.source();
        }
        None
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.context {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.source)
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} error: {self}", self.kind)
    }
}

impl std::error::Error for Error {
    /// What caused the wrapped error: its own message is already this error's (so a
    /// chain printed whole, as anyhow's `{:#}` does, says each thing once).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Each layer's error becomes an [`Error`] of the layer's kind.
macro_rules! from_layer {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error {
                    kind: e.kind(),
                    context: Vec::new(),
                    source: Box::new(e),
                }
            }
        }
    )*};
}

from_layer!(
    crate::pipeline::Error,
    crate::model::Error,
    crate::dicom::Error,
    crate::dicomweb::Error,
    crate::dimse::Error
);

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            context: Vec::new(),
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_keeps_its_kind_and_context_reads_outermost_first() {
        let e: Error = crate::dicom::Error::NotDicom("no DICM".into()).into();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let e = e.context("a.dcm").context("segment 2");
        assert_eq!(e.to_string(), "segment 2: a.dcm: not a DICOM file: no DICM");
        let io: Error = std::io::Error::other("disk full").into();
        assert_eq!(io.kind(), ErrorKind::Io);
        let dw: Error = crate::dicomweb::Error::Url("bad".into()).into();
        assert_eq!(dw.kind(), ErrorKind::BadInput);
        // Found below a foreign wrapper, as the CLI finds it in anyhow's chain.
        #[derive(Debug)]
        struct Wrapper(Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let w = Wrapper(Error::new(ErrorKind::Weights, "pinned"));
        assert_eq!(Error::kind_of(&w), Some(ErrorKind::Weights));
        assert_eq!(Error::kind_of(&Message("x".into())), None);
        // A chain printed whole says each message once.
        let e: Error = Error::bad_input("give a box").context("the request");
        let chain: Vec<String> =
            std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect();
        assert_eq!(chain, ["the request: give a box"]);
    }
}
