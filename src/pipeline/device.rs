//! Which device runs the model: the rule every shell applies (the CLI natively with wgpu's
//! adapter info, the web shell with WebGPU's).
//!
//! A GPU adapter is used by default only when it is a real GPU. Software rasterisers
//! (Mesa's llvmpipe/lavapipe, Google's SwiftShader, Microsoft's WARP) expose a GPU
//! interface on the CPU: LiteMedSAM took 45.9 s to embed and 8.0 s to decode on lavapipe
//! where the CPU backend takes 0.9 s and 0.04 s on the same 2 cores. On such an adapter the
//! CPU backend runs unless the user forces the GPU.
//!
//! [`select`] applies the rule with wgpu's adapter (the native fronts); the browser engine
//! asks WebGPU for its adapter's facts and applies [`use_gpu`] itself. The GPU runtime is
//! started once per process and kept: every later selection gets the same device.

use burn::tensor::Device;

use super::Error;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A real GPU when there is one, else the CPU backend.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The GPU adapter, whatever it is (software ones included); an error without one.
    Gpu,
}

/// What is known of a GPU adapter (wgpu's `AdapterInfo`, or WebGPU's `GPUAdapterInfo`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterFacts {
    /// The API reports a CPU device (wgpu `DeviceType::Cpu`).
    #[serde(default)]
    pub cpu_device_type: bool,
    /// The browser marks the adapter as a fallback (software) one.
    #[serde(default)]
    pub is_fallback_adapter: bool,
    /// Adapter or device name (wgpu `name`, WebGPU `device`/`description`).
    #[serde(default)]
    pub name: String,
    /// Driver, vendor or architecture strings (wgpu `driver`/`driver_info`, WebGPU
    /// `vendor`/`architecture`).
    #[serde(default)]
    pub driver: String,
}

/// Words naming software rasterisers in adapter names and drivers, lower case.
const SOFTWARE_WORDS: [&str; 4] = ["llvmpipe", "lavapipe", "swiftshader", "warp"];
/// WARP's adapter name on Windows.
const WARP_NAME: &str = "microsoft basic render driver";

impl AdapterFacts {
    /// Why this adapter is a software rasteriser, if it is one.
    pub fn software(&self) -> Option<String> {
        if self.cpu_device_type {
            return Some(format!("{} is a CPU (software) adapter", self.label()));
        }
        if self.is_fallback_adapter {
            return Some(format!("{} is a fallback (software) adapter", self.label()));
        }
        let text = format!("{} {}", self.name, self.driver).to_lowercase();
        let word = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find_map(|w| SOFTWARE_WORDS.iter().find(|n| **n == w))
            .copied()
            .or_else(|| text.contains(WARP_NAME).then_some("WARP"));
        word.map(|n| format!("{} is a software rasteriser ({n})", self.label()))
    }

    fn label(&self) -> String {
        if self.name.is_empty() {
            "the GPU adapter".into()
        } else {
            format!("the GPU adapter `{}`", self.name)
        }
    }
}

/// The decision for `choice` given the adapter found (if any): `Ok(true)` to run on it,
/// `Ok(false)` for the CPU backend (with the reason to report when the adapter was passed
/// over), or an error when the GPU was asked for and there is none.
pub fn use_gpu(
    choice: DeviceChoice,
    adapter: Result<&AdapterFacts, &str>,
) -> Result<(bool, Option<String>), String> {
    match (choice, adapter) {
        (DeviceChoice::Cpu, _) => Ok((false, None)),
        (DeviceChoice::Gpu, Ok(_)) => Ok((true, None)),
        (DeviceChoice::Gpu, Err(e)) => Err(format!("no GPU adapter: {e}")),
        (DeviceChoice::Auto, Err(e)) => Ok((false, Some(format!("no GPU adapter ({e})")))),
        (DeviceChoice::Auto, Ok(facts)) => match facts.software() {
            Some(why) => Ok((
                false,
                Some(format!(
                    "{why}: the CPU backend is much faster here (force the adapter with --gpu)"
                )),
            )),
            None => Ok((true, None)),
        },
    }
}

/// The device a selection gave.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The Burn device.
    pub device: Device,
    /// True for the GPU (wgpu), false for the CPU backend.
    pub gpu: bool,
    /// How to name it to the user: `cpu (flex)` or `gpu (wgpu: ADAPTER)`.
    pub name: String,
    /// Why an adapter was passed over for the CPU backend, to tell the user.
    pub note: Option<String>,
}

impl Selected {
    fn cpu(note: Option<String>) -> Self {
        Selected {
            device: Device::flex(),
            gpu: false,
            name: "cpu (flex)".into(),
            note,
        }
    }
}

/// The process's GPU runtime, started on the first selection that needs it: its device and
/// adapter, or why there is none. wgpu's runtime cannot be started twice, so it is kept.
#[cfg(feature = "wgpu")]
static GPU: std::sync::Mutex<Option<Result<(Device, AdapterFacts), String>>> =
    std::sync::Mutex::new(None);

/// The GPU runtime's device and adapter, started once (see [`GPU`]).
#[cfg(feature = "wgpu")]
async fn gpu() -> Result<(Device, AdapterFacts), String> {
    if let Some(known) = GPU.lock().expect("lock").clone() {
        return known;
    }
    let started = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map(|(device, setup)| {
            let info = setup.adapter.get_info();
            let facts = AdapterFacts {
                cpu_device_type: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
                is_fallback_adapter: false,
                name: info.name.clone(),
                driver: format!("{} {}", info.driver, info.driver_info),
            };
            (device, facts)
        })
        .map_err(|e| e.to_string());
    GPU.lock().expect("lock").get_or_insert(started).clone()
}

/// Without the `wgpu` feature there is no GPU backend.
#[cfg(not(feature = "wgpu"))]
async fn gpu() -> Result<(Device, AdapterFacts), String> {
    Err("this build has no GPU backend (built without the `wgpu` feature)".into())
}

/// The device for `choice` by the rule of this module: the CPU backend, or the GPU
/// adapter (started once per process). An error when the GPU was asked for and there is
/// none.
pub async fn select_async(choice: DeviceChoice) -> Result<Selected, Error> {
    if choice == DeviceChoice::Cpu {
        return Ok(Selected::cpu(None));
    }
    let probe = gpu().await;
    let facts = probe.as_ref().map(|(_, f)| f).map_err(String::as_str);
    let (use_it, note) = use_gpu(choice, facts).map_err(Error::Device)?;
    match probe {
        Ok((device, facts)) if use_it => Ok(Selected {
            device,
            gpu: true,
            name: format!("gpu (wgpu: {})", facts.name),
            note: None,
        }),
        _ => Ok(Selected::cpu(note)),
    }
}

/// [`select_async`], waited for (native fronts: wgpu's native adapter request completes
/// without an event loop).
pub fn select(choice: DeviceChoice) -> Result<Selected, Error> {
    futures_lite::future::block_on(select_async(choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, driver: &str) -> AdapterFacts {
        AdapterFacts {
            name: name.into(),
            driver: driver.into(),
            ..Default::default()
        }
    }

    #[test]
    fn software_adapters_are_recognised() {
        for (name, driver) in [
            ("llvmpipe (LLVM 15.0.6, 256 bits)", "llvmpipe"),
            ("", "Mesa lavapipe"),
            ("SwiftShader Device (Subzero)", ""),
            ("Microsoft Basic Render Driver", ""),
            ("", "google swiftshader"),
        ] {
            assert!(facts(name, driver).software().is_some(), "{name} {driver}");
        }
        for (name, driver) in [
            ("NVIDIA H200", "NVIDIA 560.35"),
            ("AMD Radeon RX 7900 XTX (RADV NAVI31)", "radv Mesa"),
            ("Apple M2", ""),
            (
                "Intel(R) Arc(tm) A770 Graphics (DG2)",
                "Intel open-source Mesa driver",
            ),
        ] {
            assert!(facts(name, driver).software().is_none(), "{name} {driver}");
        }
        let cpu = AdapterFacts {
            cpu_device_type: true,
            ..facts("Some GPU", "")
        };
        assert!(cpu.software().is_some());
    }

    #[test]
    fn auto_passes_software_over_and_gpu_forces_it() {
        let sw = facts("llvmpipe", "");
        let hw = facts("NVIDIA H200", "");
        assert_eq!(use_gpu(DeviceChoice::Auto, Ok(&hw)), Ok((true, None)));
        let (gpu, why) = use_gpu(DeviceChoice::Auto, Ok(&sw)).unwrap();
        assert!(!gpu && why.unwrap().contains("software"));
        assert_eq!(use_gpu(DeviceChoice::Gpu, Ok(&sw)), Ok((true, None)));
        assert!(use_gpu(DeviceChoice::Gpu, Err("none")).is_err());
        assert_eq!(use_gpu(DeviceChoice::Cpu, Ok(&hw)), Ok((false, None)));
        assert!(!use_gpu(DeviceChoice::Auto, Err("none")).unwrap().0);
    }
}
