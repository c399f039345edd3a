//! Numerical parity of LiteMedSAM in Burn with the PyTorch reference, on real DICOM.
//!
//! Fixtures: tests/data/parity (scripts/make_parity_fixtures.py, the wheel's own reference
//! code on CPU). Tolerances (issue 2): embedding max |Δ| <= 2e-3 and mean |Δ| <= 1e-4,
//! low-res logits max |Δ| <= 5e-3, final mask IoU >= 0.995. Every case on the CPU backend;
//! on wgpu the kidney MR (with every prompt kind), and the default embedder's pooled vector
//! of its encoder output against the CPU's.

mod common;

use common::*;
use medfm::Device;
use medfm::dicom;
use medfm::model::Sam;
use medfm::model::weights::Precision;
use medfm::pipeline::{Segmenter, embed, mask_from_logits, preprocess, tensor_to_vec};

const EMB_MAX: f32 = 2e-3;
const EMB_MEAN: f32 = 1e-4;
const LOGITS_MAX: f32 = 5e-3;
const MASK_IOU: f64 = 0.995;
/// Our preprocessing vs numpy/OpenCV's (both float32).
const INPUT_MAX: f32 = 1e-4;

/// Check the cases of the manifest named in `only` (every case when empty) on one device;
/// returns, per case with a model run, the default embedder's vector of its encoder output
/// (`embed::pooled_vector`, computed on that device).
fn check_cases(seg: &Segmenter, label: &str, only: &[&str]) -> Vec<(String, Vec<f32>)> {
    let manifest = manifest();
    let mut vectors = Vec::new();
    for case in manifest["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let dir = data(&format!("parity/{name}"));
        let bytes = std::fs::read(data(case["file"].as_str().unwrap())).unwrap();
        let image = dicom::read(&bytes).expect("fixture reads");
        let frame = image.frame(0).expect("fixture decodes");
        let pre = preprocess(&frame, &image.meta).expect("preprocess");
        assert_eq!(
            (pre.rows, pre.cols),
            (
                case["rows"].as_u64().unwrap() as usize,
                case["cols"].as_u64().unwrap() as usize
            )
        );
        assert_eq!(
            pre.new_rows,
            case["new_rows"].as_u64().unwrap() as usize,
            "{name}: resized rows"
        );
        assert_eq!(
            pre.new_cols,
            case["new_cols"].as_u64().unwrap() as usize,
            "{name}: resized cols"
        );
        let ref_input = read_f32_gz(&dir.join("input.f32.gz"));
        let (dmax, _) = abs_diff(&pre.pixels, &ref_input);
        println!("[{label}] {name}: preprocessed input max |Δ| {dmax:.2e}");
        assert!(
            dmax <= INPUT_MAX,
            "{name}: preprocessing differs from the reference by {dmax}"
        );
        if case["preprocess_only"].as_bool() == Some(true) {
            continue;
        }

        // Encoder on the reference input, so the model is compared alone.
        let mut ref_pre = pre.clone();
        ref_pre.pixels = ref_input;
        let emb = seg.embed(&ref_pre).expect("embed");
        let ours = tensor_to_vec(emb.tensor.clone()).unwrap();
        let reference = read_f32_gz(&dir.join("embedding.f32.gz"));
        let (emax, emean) = abs_diff(&ours, &reference);
        println!("[{label}] {name}: embedding max |Δ| {emax:.2e}, mean |Δ| {emean:.2e}");
        assert!(
            emax <= EMB_MAX && emean <= EMB_MEAN,
            "{name}: embedding max {emax} mean {emean}"
        );
        let vector = embed::pooled_vector(&emb, &ref_pre).expect("pooled vector");
        assert_eq!(vector.len(), embed::DIM);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{name}: unit length, got {norm}");
        vectors.push((name.to_string(), vector));

        for (pname, p) in case["prompts"].as_object().unwrap() {
            let prompt = prompt_of(p);
            let out = seg.segment(&emb, &ref_pre, &prompt).expect("segment");
            let ref_logits = read_f32_gz(&dir.join(format!("{pname}.logits.f32.gz")));
            let (lmax, _) = abs_diff(&out.low_res_logits, &ref_logits);
            let ref_iou: Vec<f32> = p["iou"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let (imax, _) = abs_diff(&out.iou, &ref_iou);
            let ref_mask = read_gz(&dir.join(format!("{pname}.mask.u8.gz")));
            let best = p["best"].as_u64().unwrap() as usize;
            let n = 256 * 256;
            // Same mask index as the reference, so a near-tie in predicted IoU cannot swap masks.
            let mask = mask_from_logits(&out.low_res_logits[best * n..(best + 1) * n], &ref_pre);
            let miou = iou(&mask, &ref_mask);
            let area: usize = mask.iter().map(|&m| m as usize).sum();
            let ref_area = p["area"].as_u64().unwrap() as usize;
            println!(
                "[{label}] {name}/{pname}: logits max |Δ| {lmax:.2e}, IoU-pred max |Δ| {imax:.2e}, mask IoU {miou:.4} (area {area} vs {ref_area})"
            );
            assert!(lmax <= LOGITS_MAX, "{name}/{pname}: logits max |Δ| {lmax}");
            assert!(
                imax <= LOGITS_MAX,
                "{name}/{pname}: IoU prediction |Δ| {imax}"
            );
            assert!(miou >= MASK_IOU, "{name}/{pname}: mask IoU {miou}");
        }
    }
    vectors
}

fn parity_on(device: Device, label: &str, only: &[&str]) -> Vec<(String, Vec<f32>)> {
    let sam: Sam = load_model(Precision::Fp32, &device);
    check_cases(&Segmenter::new(sam, device), label, only)
}

#[test]
fn parity_cpu() {
    parity_on(Device::flex(), "cpu", &[]);
}

/// With the GPU backend (the `wgpu` feature, on by default). One case: every case runs the
/// same kernels at the same shapes (the encoder's input is always 1x3x256x256), and the
/// kidney MR has all three prompt kinds with non-empty masks; CI's Vulkan is lavapipe, where
/// an encoder pass takes about two minutes on 2 cores (docs/design.md, "Devices").
#[cfg(feature = "wgpu")]
#[test]
fn parity_wgpu() {
    let gpu = parity_on(wgpu_device(), "wgpu", &["mr_kidney"]);
    let cpu = parity_on(Device::flex(), "cpu", &["mr_kidney"]);
    assert_eq!(gpu.len(), 1);
    for ((name, a), (_, b)) in cpu.iter().zip(&gpu) {
        let (max, _) = abs_diff(a, b);
        println!("{name}: default embedder's vector, CPU vs wgpu: max |Δ| {max:.2e}");
        assert!(max <= 1e-4, "{name}: vectors differ by {max}");
    }
}
