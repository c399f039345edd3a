//! The library's spans (read, decode, preprocess, encode, decode_mask, write: the ones
//! `medfm -v` prints natively) timed in the browser and handed to a JS listener, which
//! the worker turns into `progress` events (`{stage: 'span', name, ms}`).
//!
//! A minimal `tracing` subscriber: spans of this crate only, no events, no fields. On
//! WebGPU the encoder's span measures the submission, not the GPU's work (the device runs
//! asynchronously); on the CPU it is the work.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use wasm_bindgen::prelude::*;
use web_time::Instant;

thread_local! {
    static LISTENER: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

/// Call `listener(name, ms)` each time one of the library's spans closes (replaces any
/// earlier listener; `undefined` removes it).
#[wasm_bindgen(js_name = setSpanListener)]
pub fn set_span_listener(listener: Option<js_sys::Function>) {
    LISTENER.with(|l| *l.borrow_mut() = listener);
}

/// Install the subscriber (once, when the module starts).
pub(crate) fn install() {
    // Fails only if a subscriber is already set: then that one gets the spans.
    let _ = tracing::subscriber::set_global_default(SpanTimer::default());
}

#[derive(Default)]
struct SpanTimer {
    next: AtomicU64,
    /// Open spans: name, start, handles.
    live: Mutex<HashMap<u64, (&'static str, Instant, usize)>>,
}

impl Subscriber for SpanTimer {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && metadata.target().starts_with("medfm")
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, (attrs.metadata().name(), Instant::now(), 1));
        }
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}

    fn clone_span(&self, id: &Id) -> Id {
        if let Ok(mut live) = self.live.lock()
            && let Some(span) = live.get_mut(&id.into_u64())
        {
            span.2 += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let closed = {
            let Ok(mut live) = self.live.lock() else {
                return false;
            };
            let key = id.into_u64();
            match live.get_mut(&key) {
                Some(span) if span.2 > 1 => {
                    span.2 -= 1;
                    None
                }
                Some(_) => live.remove(&key),
                None => None,
            }
        };
        let Some((name, start, _)) = closed else {
            return false;
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        LISTENER.with(|l| {
            if let Some(f) = l.borrow().as_ref() {
                // A listener that throws loses its own event only.
                let _ = f.call2(&JsValue::NULL, &JsValue::from_str(name), &ms.into());
            }
        });
        true
    }
}
