//! Splitting work over the CPU threads, and outputs written by several tasks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Elements below which splitting over threads costs more than it saves.
pub(super) const MIN_PER_THREAD: usize = 1 << 16;

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);

// SAFETY: only used by `par_tasks` callers whose tasks write disjoint ranges.
unsafe impl Send for SendPtr {}

// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `i` values further (a method, so closures capture the whole wrapper).
    pub(super) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }

    /// `len` values from `i` on, zeroed, as a slice.
    ///
    /// # Safety
    /// `i..i + len` lies inside the buffer and no other reference to these values lives
    /// while the slice does.
    pub(super) unsafe fn zeroed<'a>(self, i: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: the caller's promise.
        unsafe {
            std::ptr::write_bytes(self.at(i), 0, len);
            std::slice::from_raw_parts_mut(self.at(i), len)
        }
    }
}

/// A kernel's output of `len` values, allocated without being written: the kernel's tasks
/// each write (or zero, through [`SendPtr::zeroed`], right before they write) their own
/// part. `vec![0.0; len]` would zero all of it first in one single-threaded pass that
/// leaves nothing in cache for a stage-0 tensor (64 MiB): 4% of the encoder's samples.
pub(super) struct Output {
    values: Vec<f32>,
    len: usize,
}

impl Output {
    pub(super) fn new(len: usize) -> Self {
        Self {
            values: Vec::with_capacity(len),
            len,
        }
    }

    /// The buffer's start, for the tasks.
    pub(super) fn ptr(&mut self) -> SendPtr {
        SendPtr(self.values.as_mut_ptr())
    }

    /// The values, once written.
    ///
    /// # Safety
    /// Every one of the `len` values has been written.
    pub(super) unsafe fn written(mut self) -> Vec<f32> {
        // SAFETY: capacity `len` from `new`; initialised by the caller's promise.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

/// Runs `f(0..tasks)` over the CPU threads (tasks dealt round-robin; this thread takes its
/// share too).
pub(super) fn par_tasks(tasks: usize, f: impl Fn(usize) + Sync) {
    par_tasks_with(tasks, || (), |_, t| f(t));
}

/// [`par_tasks`] with a scratch value per thread, made by `scratch` and lent to each of the
/// thread's tasks.
pub(super) fn par_tasks_with<S>(
    tasks: usize,
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) {
    let parts = threads().min(tasks).max(1);
    let run = |part: usize| {
        let mut s = scratch();
        (part..tasks).step_by(parts).for_each(|t| f(&mut s, t));
    };
    if parts == 1 {
        run(0);
        return;
    }
    std::thread::scope(|s| {
        for part in 1..parts {
            let run = &run;
            s.spawn(move || run(part));
        }
        run(0);
    });
}

/// The thread count a [`RunConfig`](crate::RunConfig) set; 0: none was set.
static CONFIGURED: AtomicUsize = AtomicUsize::new(0);

/// CPU threads for these kernels: what the process's [`RunConfig`](crate::RunConfig) set,
/// else the platform's parallelism; 1 where threads cannot be spawned (wasm32 without
/// threads reports no parallelism).
pub fn threads() -> usize {
    static PLATFORM: OnceLock<usize> = OnceLock::new();
    match CONFIGURED.load(Ordering::Relaxed) {
        0 => *PLATFORM.get_or_init(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        n => n,
    }
}

/// Sets [`threads`] (by [`RunConfig::apply`](crate::RunConfig::apply) only).
pub(crate) fn set_threads(n: usize) {
    CONFIGURED.store(n, Ordering::Relaxed);
}

/// Runs `f` over `data` split into one contiguous part per thread, each a whole number of
/// `unit`-value items; this thread takes the first part.
pub(super) fn par_split(data: &mut [f32], unit: usize, f: impl Fn(&mut [f32]) + Sync) {
    let items = data.len() / unit.max(1);
    let parts = threads().min(data.len() / MIN_PER_THREAD).min(items).max(1);
    if parts == 1 {
        f(data);
        return;
    }
    let per_part = items.div_ceil(parts) * unit;
    std::thread::scope(|s| {
        let mut chunks = data.chunks_mut(per_part);
        let first = chunks.next();
        for c in chunks {
            let f = &f;
            s.spawn(move || f(c));
        }
        if let Some(c) = first {
            f(c);
        }
    });
}
