//! The fuzz target's corpus replayed as an ordinary test (no fuzzer, no nightly):
//! every input of fuzz/corpus/read_decode and fuzz/regressions goes through read, every
//! frame's decode (the first four), the VOIs and the modality LUT, as
//! fuzz/fuzz_targets/read_decode.rs does. Nothing may panic; the regression inputs (what
//! the fuzzer found) must be refused with a message.

use std::path::Path;

use medfm::dicom;

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

#[test]
fn fuzzer_findings_are_refused_with_a_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let err = dicom::read(&bytes).and_then(|i| i.frame(0).map(|_| ()));
        let msg = err
            .expect_err(&format!("{} must be refused", path.display()))
            .to_string();
        println!("{}: {msg}", path.file_name().unwrap().to_string_lossy());
        assert!(msg.len() > 20, "{msg}");
        n += 1;
    }
    assert!(n >= 1);
}
