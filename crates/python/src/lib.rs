//! The `medfm` Python package's extension module, `medfm._medfm`: a thin front over the
//! core (docs/python.md). Python values in (paths, numpy arrays, tuples), the core's jobs
//! called with the GIL released, numpy arrays out, the core's errors raised as the classes
//! of `medfm.errors` (by [`medfm::ErrorKind`]). Every call runs under [`run`]: a panic
//! becomes `medfm.InternalError`, never an unwind through the FFI boundary.

mod arrays;
mod model;
mod rules;
mod series;

use std::panic::{AssertUnwindSafe, catch_unwind};

use medfm::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The core's error as the exception of its kind (`medfm.errors.BY_KIND`).
pub(crate) fn raise(py: Python<'_>, e: Error) -> PyErr {
    let message = e.to_string();
    let class = py
        .import("medfm.errors")
        .and_then(|m| m.getattr("BY_KIND"))
        .and_then(|table| table.get_item(e.kind().code()))
        .and_then(|class| class.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        // The package is broken (medfm.errors missing): still an exception, never a crash.
        Err(why) => PyRuntimeError::new_err(format!("{message} (medfm.errors: {why})")),
    }
}

/// Bad input, as the core says it.
pub(crate) fn bad(message: impl Into<String>) -> Error {
    Error::bad_input(message)
}

/// Run `work` with the GIL released; its error raised by kind, a panic as
/// `InternalError` (the process and the `Model` stay usable).
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(work))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(raise(py, e)),
        Err(panic) => Err(raise(py, panicked(panic))),
    }
}

/// [`run`] for work that needs the GIL (building Python values).
pub(crate) fn run_held<T>(py: Python<'_>, work: impl FnOnce() -> Result<T, Error>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(raise(py, e)),
        Err(panic) => Err(raise(py, panicked(panic))),
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    Error::new(
        ErrorKind::Internal,
        format!("medfm failed inside ({what}); please report it"),
    )
}

/// Pass the core's warnings on as Python `UserWarning`s.
pub(crate) fn warn_all(py: Python<'_>, warnings: &[String]) -> PyResult<()> {
    let category = py.get_type::<pyo3::exceptions::PyUserWarning>();
    for w in warnings {
        let text = std::ffi::CString::new(w.replace('\0', " ")).unwrap_or_default();
        PyErr::warn(py, &category, &text, 2)?;
    }
    Ok(())
}

#[pymodule]
fn _medfm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<series::Series>()?;
    m.add_class::<series::Propagation>()?;
    m.add_function(wrap_pyfunction!(series::read_series, m)?)?;
    m.add_function(wrap_pyfunction!(series::write_seg, m)?)?;
    m.add_function(wrap_pyfunction!(series::write_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(model::pinned_sha256, m)?)?;
    m.add_class::<rules::Rules>()?;
    m.add_function(wrap_pyfunction!(rules::read_rules, m)?)?;
    Ok(())
}
