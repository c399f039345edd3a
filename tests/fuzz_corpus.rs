//! The fuzz target's corpus replayed as an ordinary test (no fuzzer, no nightly):
//! every input of fuzz/corpus/read_decode and fuzz/regressions goes through read, every
//! frame's decode (the first four), the VOIs and the modality LUT, as
//! fuzz/fuzz_targets/read_decode.rs does. Nothing may panic; each regression input (what
//! the fuzzer or a review found) must be refused for the reason it is named after, in
//! bounded memory (this test binary counts its allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use medfm::dicom;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most any regression input may make the reader hold at once: their declared sizes
/// are gigabytes, their real data kilobytes.
const MAX_PEAK: usize = 64 << 20;

fn replay(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(image) = dicom::read(&bytes) {
            for f in 0..image.meta.frames.min(4) {
                let _ = image.frame(f);
                let _ = image.vois(f);
                let _ = image.modality_lut(f);
            }
        }
        n += 1;
    }
    n
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let n = replay(&root.join("corpus/read_decode"));
    assert!(n >= 50, "only {n} corpus inputs");
    println!("{n} corpus inputs replayed");
}

/// Each regression file and the reason it must be refused with (the words its name
/// stands for).
const REGRESSIONS: [(&str, &str); 8] = [
    (
        "oom-unknown-vr-declares-3.7GB.dcm",
        "declares 3758161918 bytes",
    ),
    (
        "oom-deflated-declares-3.2GB.dcm",
        "declares 3166485692 bytes",
    ),
    (
        "oom-sl-value-desync-declares-1.6GB.dcm",
        "declares 1610219520 bytes",
    ),
    (
        "oom-meta-group-length-declares-2.6GB.dcm",
        "declares 2600708099 bytes",
    ),
    (
        "oom-fffe-element-declares-4.2GB.dcm",
        "declares 4261412863 bytes",
    ),
    (
        "crash-j2k-codestream-larger-than-image.dcm",
        "codestream is 40192x512",
    ),
    (
        "oom-segmented-palette-entries-minus-1.dcm",
        "palette descriptor declares -1 entries",
    ),
    (
        "oom-segmented-palette-entries-4294967295.dcm",
        "palette descriptor declares 4294967295 entries",
    ),
];

#[test]
fn fuzzer_findings_are_refused_for_their_reason_in_bounded_memory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".md"))
        .collect();
    files.sort();
    let mut named: Vec<String> = REGRESSIONS.iter().map(|(f, _)| f.to_string()).collect();
    named.sort();
    assert_eq!(files, named, "every regression file needs its reason here");
    for (file, reason) in REGRESSIONS {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let err = dicom::read(&bytes).and_then(|i| i.frame(0).map(|_| ()));
        let peak = PEAK.load(Ordering::SeqCst) - before;
        let msg = err
            .expect_err(&format!("{file} must be refused"))
            .to_string();
        println!("{file}: {msg} (peak {} KiB)", peak >> 10);
        assert!(msg.contains(reason), "{file}: `{msg}` lacks `{reason}`");
        assert!(peak < MAX_PEAK, "{file}: {peak} bytes held at once");
    }
}
