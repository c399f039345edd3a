//! The node's loops under supervision: what the work thread is doing and when the DICOM
//! listener last passed (for `/api/health`), and the boundary that turns one item's panic
//! into that item's failure.

use std::sync::Mutex;

use anyhow::Result;

use super::records::now_ms;

/// What the work thread is doing and since when: `/api/health` reports it and turns 503
/// when the thread has ended or one step has run past its bound.
#[derive(Default)]
pub struct Liveness {
    /// The step under way ("idle" between passes) and when it began (Unix ms).
    step: Mutex<(String, u64)>,
    /// The thread has left its loop (only at stop; a panic inside is caught per item).
    ended: std::sync::atomic::AtomicBool,
}

impl Liveness {
    pub(crate) fn begin(&self, step: impl Into<String>) {
        *self.step.lock().unwrap_or_else(|p| p.into_inner()) = (step.into(), now_ms());
    }

    /// The thread has left its loop.
    pub(crate) fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `(step, seconds in it, ended)`.
    pub fn now(&self) -> (String, u64, bool) {
        let (step, since) = self.step.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (
            step,
            now_ms().saturating_sub(since) / 1000,
            self.ended.load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}

/// A loop's heartbeat: when it last passed (Unix ms) and whether it has left. The DICOM
/// listener beats on every pass (at least every 100 ms while it waits).
#[derive(Default)]
pub struct Heartbeat {
    last: std::sync::atomic::AtomicU64,
    ended: std::sync::atomic::AtomicBool,
}

impl Heartbeat {
    pub(crate) fn beat(&self) {
        self.last
            .store(now_ms(), std::sync::atomic::Ordering::SeqCst);
    }

    /// The loop has left.
    pub(crate) fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `(seconds since the last pass, ended)`.
    pub fn now(&self) -> (u64, bool) {
        let last = self.last.load(std::sync::atomic::Ordering::SeqCst);
        (
            now_ms().saturating_sub(last) / 1000,
            self.ended.load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}

/// Run `f`; a panic inside becomes an error with its message, so one item's bug is that
/// item's recorded failure and the loop goes on.
pub fn supervised<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(anyhow::anyhow!(
            "internal error (a panic): {}",
            panic_message(payload.as_ref())
        )),
    }
}

/// The message of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
