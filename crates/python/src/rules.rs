//! `medfm.read_rules` and `medfm.Rules`: the node's `[[rule]]` tables
//! ([`medfm::jobs::rules`]), for the archive batch's segment job.

use std::path::PathBuf;

use medfm::Error;
use medfm::jobs::rules::{self, JobKind, Rule};
use pyo3::prelude::*;

use crate::run;

/// Rules as the edge node's `[[rule]]` tables: which series (modality, body part, series
/// description pattern, SOP class) get which segments (boxes as fractions of the middle
/// slice, propagated or not). Made by `medfm.read_rules`.
#[pyclass(frozen, module = "medfm")]
pub(crate) struct Rules {
    pub(crate) inner: Vec<Rule>,
}

impl Rules {
    /// The first rule with a segment job that matches `series`.
    pub(crate) fn for_series(&self, series: &medfm::jobs::Series) -> Result<Option<&Rule>, Error> {
        for rule in &self.inner {
            if rule.jobs.contains(&JobKind::Segment) && rule.matches_series(series)? {
                return Ok(Some(rule));
            }
        }
        Ok(None)
    }
}

/// Read a rules file: `[[rule]]` tables as in the node's `node.toml` and nothing else,
/// each checked as the node checks it (raises `BadInput` naming the rule).
#[pyfunction]
pub(crate) fn read_rules(py: Python<'_>, path: PathBuf) -> PyResult<Rules> {
    let inner = run(py, || {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::from(e).context(format!("reading {}", path.display())))?;
        rules::read_rules(&text).map_err(|e| e.context(format!("{}", path.display())))
    })?;
    Ok(Rules { inner })
}

#[pymethods]
impl Rules {
    /// Each rule's name (its `name`, or `rule-` and a digest of its content, as the node
    /// names it).
    #[getter]
    fn names(&self) -> Vec<String> {
        self.inner.iter().map(Rule::key).collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("<medfm.Rules {:?}>", self.names())
    }
}
