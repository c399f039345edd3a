//! The fuzz targets' corpora replayed as an ordinary test (no fuzzer, no nightly), each
//! input through what its target does (fuzz/fuzz_targets, fuzz/model/fuzz_targets):
//! read + decode + VOIs + modality LUT, a SEG written over the image, volume assembly +
//! NIfTI, the node's file meta reader, `.bpk` loading, a DINOv2 config + safetensors.
//! Nothing may panic; each regression input (what the fuzzer or a review found) must be
//! refused for the reason it is named after, in bounded memory (this test binary counts
//! its allocations).

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

/// The inputs of a corpus folder.
fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// fuzz/fuzz_targets/seg_write.rs over its corpus.
#[test]
fn seg_write_corpus_replays_without_panic() {
    let inputs = corpus("fuzz/corpus/seg_write");
    let mut written = 0;
    for bytes in &inputs {
        let Some((&seed, file)) = bytes.split_first() else {
            continue;
        };
        let Ok(image) = dicom::read(file) else {
            continue;
        };
        let n = (image.meta.rows as usize).saturating_mul(image.meta.cols as usize);
        if n == 0 || n > 1 << 22 {
            continue;
        }
        let mask: Vec<u8> = (0..n)
            .map(|i| u8::from((i as u8).wrapping_mul(seed | 1) & 0x80 != 0))
            .collect();
        if let Ok(seg) = dicom::seg::write_seg(&image, 0, &mask, &Default::default()) {
            let back = dicom::read(&seg).expect("a SEG we wrote reads back");
            assert_eq!(
                (back.meta.rows, back.meta.cols),
                (image.meta.rows, image.meta.cols)
            );
            written += 1;
        }
    }
    assert!(
        inputs.len() >= 10 && written >= 5,
        "{} inputs, {written} SEGs",
        inputs.len()
    );
}

/// fuzz/fuzz_targets/dicomweb.rs over its corpus: the multipart parser fed in pieces of
/// the input's first byte, the DICOM JSON readers and the single-frame builder over the
/// input as WADO-RS metadata; seeds that must parse, build and decode do.
#[test]
fn dicomweb_corpus_replays_without_panic() {
    use medfm::dicomweb::{json, multipart::Parser};
    let inputs = corpus("fuzz/corpus/dicomweb");
    let (mut parts, mut finished, mut built, mut decoded) = (0, 0, 0, 0);
    for bytes in &inputs {
        let Some((&size, body)) = bytes.split_first() else {
            continue;
        };
        let mut p = Parser::for_content_type("multipart/related; boundary=b").unwrap();
        let mut ok = true;
        for piece in body.chunks(usize::from(size).max(1)) {
            match p.feed(piece) {
                Ok(got) => parts += got.len(),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && p.finish().is_ok() {
            finished += 1;
        }
        let _ = json::studies(body);
        let _ = json::series(body);
        let _ = json::instances(body);
        let _ = json::stow_response(body);
        let (b, d) = single_frame(size, body);
        (built, decoded) = (built + usize::from(b), decoded + usize::from(d));
    }
    assert!(
        inputs.len() >= 9 && parts >= 2 && finished >= 2 && built >= 3 && decoded >= 1,
        "{} inputs, {parts} parts, {finished} complete bodies, {built} frame files built, \
         {decoded} decoded",
        inputs.len()
    );
}

/// The dicomweb target's single-frame step: `body` as WADO-RS metadata, one frame (number
/// and transfer syntax picked by `size`, the body's last 64 bytes as pixels), bulk data
/// answered for URIs of even length. Returns (a file was built, its frame decoded).
fn single_frame(size: u8, body: &[u8]) -> (bool, bool) {
    use medfm::dicomweb::{Error, frames};
    const SYNTAXES: [&str; 4] = [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.2",
        "x",
    ];
    let Ok(objects) = medfm::dicomweb::json::parse(body) else {
        return (false, false);
    };
    let Some(metadata) = objects.first() else {
        return (false, false);
    };
    let frame = frames::Frame {
        number: u32::from(size % 3) + 1,
        transfer_syntax: SYNTAXES[usize::from(size / 3) % SYNTAXES.len()].to_string(),
        bytes: body[body.len().saturating_sub(64)..].to_vec(),
    };
    let mut bulk = |uri: &str| -> Result<Vec<u8>, Error> {
        if uri.len().is_multiple_of(2) {
            Ok(body[..body.len().min(uri.len() * 4)].to_vec())
        } else {
            Err(Error::Url(format!("no bulk data at {uri}")))
        }
    };
    let Ok(file) = frames::single_frame(metadata, &frame, &mut bulk) else {
        return (false, false);
    };
    let _ = dicom::identify(&file);
    let decoded = dicom::read(&file).is_ok_and(|image| image.frame(0).is_ok());
    (true, decoded)
}

/// fuzz/fuzz_targets/dimse.rs over its corpus: the command set reader and its accessors;
/// the well-formed seeds read, the broken ones are refused.
#[test]
fn dimse_corpus_replays_without_panic() {
    use medfm::dimse::Command;
    let inputs = corpus("fuzz/corpus/dimse");
    let mut read = 0;
    for bytes in &inputs {
        if let Ok(c) = Command::read(bytes) {
            read += 1;
            let _ = (
                c.command_field(),
                c.message_id(),
                c.message_id_responded(),
                c.status(),
            );
            let _ = (
                c.has_data_set(),
                c.affected_sop_class(),
                c.affected_sop_instance(),
            );
            let _ = c.error_comment();
        }
    }
    assert!(
        inputs.len() >= 7 && read >= 3,
        "{} inputs, {read} read",
        inputs.len()
    );
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dimse/huge_length"))
            .unwrap();
    assert!(
        Command::read(&bytes)
            .unwrap_err()
            .to_string()
            .contains("longer than the set")
    );
}

/// fuzz/fuzz_targets/file_meta.rs over its corpus, and each seed mutated (fixed-seed
/// byte changes and cuts): the real groups read with their UIDs, the two broken ones are
/// refused for their reason, nothing panics or gives an offset past its input.
#[test]
fn file_meta_corpus_and_mutations_never_panic() {
    use medfm::dimse::file_meta;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/file_meta");
    let inputs = corpus("fuzz/corpus/file_meta");
    let read = inputs.iter().filter(|b| file_meta(b).is_ok()).count();
    assert!(
        inputs.len() >= 7 && read >= 5,
        "{} inputs, {read} read",
        inputs.len()
    );
    // Cut inside its last element: refused. A group length past the file: advisory, the
    // data set starts where group 0002 ends (16 bytes before the end of that seed).
    let e = file_meta(&std::fs::read(dir.join("group_ends_inside_element")).unwrap()).unwrap_err();
    assert!(e.to_string().contains("runs past the end"), "{e}");
    let past = std::fs::read(dir.join("group_length_past_the_file")).unwrap();
    assert_eq!(file_meta(&past).unwrap().data_set_offset, past.len() - 16);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &inputs {
        for _ in 0..20_000 {
            let mut b = seed.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            let n = (next() as usize) % (b.len() + 1);
            for slice in [&b[..], &b[..n]] {
                if let Ok(m) = file_meta(slice) {
                    assert!(m.data_set_offset <= slice.len());
                }
            }
        }
    }
}

/// fuzz/fuzz_targets/volume_nifti.rs over its corpus.
#[test]
fn volume_nifti_corpus_replays_without_panic() {
    let inputs = corpus("fuzz/corpus/volume_nifti");
    let mut volumes = 0;
    for bytes in &inputs {
        let mut images = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 4 && images.len() < 8 {
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            let n = n.min(rest.len());
            if let Ok(image) = dicom::read(&rest[..n])
                && u64::from(image.meta.rows)
                    * u64::from(image.meta.cols)
                    * u64::from(image.meta.frames)
                    <= 1 << 20
            {
                images.push(image);
            }
            rest = &rest[n..];
        }
        if let Ok(v) = dicom::volume::assemble(&images)
            && v.to_nifti().is_ok()
        {
            volumes += 1;
        }
    }
    assert!(
        inputs.len() >= 5 && volumes >= 3,
        "{} inputs, {volumes} volumes",
        inputs.len()
    );
}

/// fuzz/model/fuzz_targets/bpk_load.rs over its corpus: every input refused with a reason
/// (none is a LiteMedSAM file).
#[test]
fn bpk_load_corpus_replays_without_panic() {
    let inputs = corpus("fuzz/model/corpus/bpk_load");
    for bytes in &inputs {
        let err = medfm::model::weights::load_bpk(bytes.clone(), &medfm::Device::flex())
            .expect_err("not a LiteMedSAM file");
        assert!(err.to_string().contains("weights"), "{err}");
    }
    assert!(inputs.len() >= 2);
}

/// fuzz/model/fuzz_targets/vit_config.rs over its corpus.
#[test]
fn vit_config_corpus_replays_without_panic() {
    let inputs = corpus("fuzz/model/corpus/vit_config");
    let mut loaded = 0;
    for bytes in &inputs {
        let split = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let Ok(config) = std::str::from_utf8(&bytes[..split]) else {
            continue;
        };
        let weights = bytes.get(split + 1..).unwrap_or_default().to_vec();
        if let Ok(cfg) = medfm::model::vit::VitConfig::from_json(config)
            && cfg.load(weights, &medfm::Device::flex()).is_ok()
        {
            loaded += 1;
        }
    }
    assert!(
        inputs.len() >= 3 && loaded >= 1,
        "{} inputs, {loaded} models",
        inputs.len()
    );
}

/// Each regression file and the reason it must be refused with (the words its name
/// stands for).
const REGRESSIONS: [(&str, &str); 11] = [
    (
        "oom-second-magic-declares-1.3GB.dcm",
        "Could not parse meta group data set",
    ),
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
        "oom-stray-delimiter-declares-1.2GB.dcm",
        "(FFFE,E0DD) declares 1224740864 bytes (0 required)",
    ),
    (
        "overflow-openjp2-packet-header-j2k.dcm",
        "Could not decode pixel data",
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
