//! Shared helpers of the integration tests: fixtures, weights, devices, metrics.
#![allow(dead_code)]

pub mod node;

use std::io::Read;
use std::path::{Path, PathBuf};

use medfm::Device;
use medfm::model::Sam;
use medfm::model::weights;
use medfm::pipeline::PixelPrompt;

/// Repository root: the workspace's (these helpers are compiled into the tests of the
/// root crate and of crates under crates/, see each Cargo.toml's `[[test]]`s).
pub fn root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(crate_dir)
        .to_path_buf()
}

/// The `medfm` binary, for the tests that run it: they are tests of crates/cli, whose
/// binary cargo builds for them and names in `CARGO_BIN_EXE_medfm`.
pub fn medfm_exe() -> &'static str {
    match option_env!("CARGO_BIN_EXE_medfm") {
        Some(exe) => exe,
        None => panic!("this test runs the medfm binary: list it among crates/cli's [[test]]s"),
    }
}

/// `tests/data/<rel>`.
pub fn data(rel: &str) -> PathBuf {
    root().join("tests").join("data").join(rel)
}

/// The files of the folder `tests/data/<rel>`, sorted by name, each read by the library.
pub fn read_folder(rel: &str) -> Vec<(PathBuf, medfm::dicom::DicomImage)> {
    let mut paths: Vec<_> = std::fs::read_dir(data(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let image = medfm::dicom::read(&std::fs::read(&p).unwrap()).unwrap();
            (p, image)
        })
        .collect()
}

/// Directory holding `lite_medsam.pth` and the `.bpk` files: `$MEDFM_WEIGHTS_DIR` or `weights/`.
pub fn weights_dir() -> PathBuf {
    std::env::var_os("MEDFM_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("weights"))
}

/// Read a weights file or fail with the command that makes it.
pub fn weights_file(name: &str) -> Vec<u8> {
    let p = weights_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Run `cargo run --release -- weights fetch` (or scripts/setup.sh) first; \
             the tests need the LiteMedSAM weights.",
            p.display()
        )
    })
}

/// Load the fp32 model from the `.bpk` file.
pub fn load_model(precision: weights::Precision, device: &Device) -> Sam {
    weights::load_bpk(weights_file(&precision.file_name()), device).expect("the .bpk loads")
}

/// Read a gzip-compressed little-endian f32 fixture.
pub fn read_f32_gz(path: &Path) -> Vec<f32> {
    read_gz(path)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Read a gzip-compressed byte fixture.
pub fn read_gz(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .expect("gzip fixture");
    out
}

/// The parity manifest written by scripts/make_parity_fixtures.py.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(data("parity/manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

/// `(max |a-b|, mean |a-b|)`.
pub fn abs_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len() as f64) as f32)
}

/// IoU of two binary masks; 1.0 when both are empty.
pub fn iou(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x > 0, y > 0);
        inter += usize::from(x && y);
        union += usize::from(x || y);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The wgpu device (Vulkan natively: Mesa lavapipe on CI), or a panic saying how to get one.
pub fn wgpu_device() -> Device {
    medfm::pipeline::device::select(medfm::pipeline::device::DeviceChoice::Gpu)
        .unwrap_or_else(|e| {
            panic!("{e}; install a Vulkan driver (CI: apt-get install mesa-vulkan-drivers)")
        })
        .device
}

/// A prompt of the parity manifest (`box`, `points` as `[x, y, label]`, `multimask`).
pub fn prompt_of(p: &serde_json::Value) -> PixelPrompt {
    let bbox = p["box"].as_array().map(|b| {
        let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2], v[3]]
    });
    let points = p["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pt| {
            let a = pt.as_array().unwrap();
            (
                a[0].as_f64().unwrap() as f32,
                a[1].as_f64().unwrap() as f32,
                a[2].as_i64().unwrap() == 1,
            )
        })
        .collect();
    PixelPrompt {
        bbox,
        points,
        multimask: p["multimask"].as_bool().unwrap(),
    }
}

/// Python with highdicom and nibabel: `$MEDFM_CHECK_PY` or ~/.cache/medfm/venv-check/bin/python
/// (scripts/test.sh installs it).
pub fn check_python() -> PathBuf {
    std::env::var_os("MEDFM_CHECK_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/medfm/venv-check/bin/python")
        })
}

/// Run the `medfm` binary with the test weights: (success, stdout, stderr).
pub fn medfm(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(medfm_exe())
        .args(args)
        .env("MEDFM_WEIGHTS_DIR", weights_dir())
        .output()
        .expect("run medfm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path in the temporary folder, unique to this test process.
pub fn tmp(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("medfm-cli-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

/// `medfm args` fails with `needle` in its stderr and no panic.
pub fn expect_error(args: &[&str], needle: &str) {
    let (ok, _, stderr) = medfm(args);
    assert!(!ok, "{args:?} should fail");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr `{stderr}` lacks `{needle}`"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

/// A copy of the DICOM file at `path` (Part 10 bytes) with `edit` applied to its data set,
/// e.g. an element removed or replaced: a defect made from a real file.
pub fn edited(path: &Path, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::open_file(path).unwrap();
    edit(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

/// dciodvfy with no error, our reader, and highdicom comparing every frame with `masks`
/// (frames back to back; `sources`: per frame, source SOP Instance UID and 1-based frame
/// number for multi-frame sources).
pub fn check_seg(
    label: &str,
    out: &[u8],
    masks: &[u8],
    rows: usize,
    cols: usize,
    sources: Option<serde_json::Value>,
) {
    check_seg_segments(label, out, masks, rows, cols, sources, None)
}

/// [`check_seg`] for a SEG with several segments: `sources` entries are
/// `[uid, frame or null, segment number]`; `segments`: `[{label, color}]` in number order
/// (scripts/check_seg.py compares labels and colours).
pub fn check_seg_segments(
    label: &str,
    out: &[u8],
    masks: &[u8],
    rows: usize,
    cols: usize,
    sources: Option<serde_json::Value>,
    segments: Option<serde_json::Value>,
) {
    let dir = std::env::temp_dir().join(format!("medfm-seg-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg_path = dir.join("seg.dcm");
    let mask_path = dir.join("mask.u8");
    std::fs::write(&seg_path, out).unwrap();
    std::fs::write(&mask_path, masks).unwrap();

    // Our own reader takes it back.
    let back = medfm::dicom::read(out).expect("our reader parses the SEG");
    assert_eq!(back.meta.modality, "SEG");
    assert_eq!(back.meta.frames as usize, masks.len() / (rows * cols));

    let v = std::process::Command::new("dciodvfy")
        .arg(&seg_path)
        .output()
        .expect("dciodvfy (apt-get install dicom3tools)");
    let report =
        String::from_utf8_lossy(&v.stderr).into_owned() + &String::from_utf8_lossy(&v.stdout);
    // A source's own UIDs are copied into the references as they are: an illegal root
    // there (a real file's "0.0.0.0..." UIDs) is the source's, not the SEG's. Our UIDs
    // ("2.25.") are checked.
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Error"))
        .filter(|l| !l.contains("Illegal root for UID") || l.contains("\"2.25."))
        .collect();
    println!(
        "{label}: dciodvfy {} errors, {} warnings",
        errors.len(),
        report.lines().filter(|l| l.starts_with("Warning")).count()
    );
    assert!(
        errors.is_empty(),
        "{label}: dciodvfy errors:\n{}",
        errors.join("\n")
    );

    let mut cmd = std::process::Command::new(check_python());
    cmd.arg(root().join("scripts/check_seg.py"))
        .args([&seg_path, &mask_path])
        .args([rows.to_string(), cols.to_string()]);
    if let Some(s) = sources {
        let p = dir.join("sources.json");
        std::fs::write(&p, s.to_string()).unwrap();
        cmd.arg(p);
        if let Some(s) = segments {
            let p = dir.join("segments.json");
            std::fs::write(&p, s.to_string()).unwrap();
            cmd.arg(p);
        }
    }
    let h = cmd
        .output()
        .expect("python with highdicom (see scripts/test.sh)");
    let msg = String::from_utf8_lossy(&h.stdout).into_owned() + &String::from_utf8_lossy(&h.stderr);
    println!("{label}: {}", msg.trim());
    assert!(h.status.success(), "{label}: highdicom check failed: {msg}");
    std::fs::remove_dir_all(&dir).ok();
}
