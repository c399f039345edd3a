/// The kinds the modules' `Error::kind` name (the main crate's `medfm::ErrorKind`), for the
/// fuzz targets that compile those modules on their own (re-exported at each crate root).
#[allow(dead_code)]
#[derive(Debug)]
pub enum ErrorKind {
    BadInput,
    Io,
}
