//! DINOv2-compatible ViT parity against `transformers` (fixtures made by
//! scripts/make_vit_fixtures.py from small seeded random models, no download): CLS,
//! patch mean and every token within 1e-4 on the CPU and on wgpu, at the training size
//! and at sizes that need position interpolation (larger, non-square, smaller); plain
//! DINOv2 and DINOv2 with registers (anti-aliased interpolation).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use medfm::Device;
use medfm::model::vit;

fn fixture(name: &str) -> (String, Vec<u8>, serde_json::Value) {
    let dir = data(&format!("vit/{name}"));
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    (config, weights, cases)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn check_model(name: &str, device: &Device) {
    let (config, weights, cases) = fixture(name);
    let model = vit::load_safetensors(&config, weights, device).unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let size: Vec<usize> = case["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(floats(&case["input"]), [1, 3, size[0], size[1]]),
            device,
        );
        let out = model.forward(x);
        let tokens = case["tokens"].as_u64().unwrap() as usize;
        assert_eq!(
            out.last_hidden.dims()[1],
            tokens,
            "{name} {size:?}: token count"
        );
        let (cls, _) = abs_diff(&to_vec(out.cls), &floats(&case["cls"]));
        let (mean, _) = abs_diff(&to_vec(out.patch_mean), &floats(&case["patch_mean"]));
        let (all, _) = abs_diff(&to_vec(out.last_hidden), &floats(&case["last_hidden"]));
        println!(
            "{name} {device:?} {}x{}: max |d| CLS {cls:.2e}, patch mean {mean:.2e}, all tokens {all:.2e}",
            size[0], size[1]
        );
        assert!(
            cls <= 1e-4 && mean <= 1e-4 && all <= 1e-4,
            "{name} {size:?}"
        );
    }
}

#[test]
fn dinov2_matches_transformers_on_cpu_and_wgpu() {
    for name in ["dinov2", "dinov2_registers"] {
        check_model(name, &Device::flex());
        // With the GPU backend (the `wgpu` feature, on by default).
        #[cfg(feature = "wgpu")]
        check_model(name, &wgpu_device());
    }
}

#[test]
fn mismatching_config_is_refused_with_what_differs() {
    let (config, weights, _) = fixture("dinov2");
    let deeper = config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    let err = vit::load_safetensors(&deeper, weights.clone(), &Device::flex())
        .expect_err("a deeper config must not load")
        .to_string();
    assert!(
        err.contains("missing") && err.contains("encoder.layer.2"),
        "{err}"
    );
    // A config describing more values than the file holds is refused before the model is
    // built; one of the same size with other shapes when the tensors are matched.
    let wider = config.replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    let err = vit::load_safetensors(&wider, weights.clone(), &Device::flex())
        .expect_err("a wider config must not load")
        .to_string();
    assert!(err.contains("more than model.safetensors"), "{err}");
    let narrower_mlp = config.replace("\"mlp_ratio\": 4", "\"mlp_ratio\": 2");
    assert_ne!(narrower_mlp, config);
    let err = vit::load_safetensors(&narrower_mlp, weights.clone(), &Device::flex())
        .expect_err("another MLP width must not load")
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    let swiglu = config.replace("\"use_swiglu_ffn\": false", "\"use_swiglu_ffn\": true");
    let err = vit::load_safetensors(&swiglu, weights.clone(), &Device::flex())
        .expect_err("swiglu is not supported")
        .to_string();
    assert!(err.contains("use_swiglu_ffn"), "{err}");
    let err = vit::load_safetensors(&config, b"not safetensors".to_vec(), &Device::flex())
        .expect_err("garbage weights")
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

/// The interpolation weights are PyTorch's on a small case (2 -> 4 samples,
/// align_corners=False, a = -0.75); anti-aliased rows sum to 1.
#[test]
fn bicubic_weights_match_pytorch() {
    let m = vit::bicubic_matrix(2, 4);
    // From torch.nn.functional.interpolate(torch.eye(2).reshape(2, 1, 1, 2), size=(1, 4),
    // mode="bicubic", align_corners=False), transposed to [output, input].
    let expected = [
        1.105_468_8,
        -0.105_468_75,
        0.773_437_5,
        0.226_562_5,
        0.226_562_5,
        0.773_437_5,
        -0.105_468_75,
        1.105_468_8,
    ];
    for (a, b) in m.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{m:?}");
    }
    for row in vit::bicubic_aa_matrix(7, 3).chunks(7) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
