//! Which device runs the model: the rule every shell applies (the CLI natively with wgpu's
//! adapter info, the web shell with WebGPU's).
//!
//! A GPU adapter is used by default only when it is a real GPU. Software rasterisers
//! (Mesa's llvmpipe/lavapipe, Google's SwiftShader, Microsoft's WARP) expose a GPU
//! interface on the CPU: LiteMedSAM took 45.9 s to embed and 8.0 s to decode on lavapipe
//! where the CPU backend takes 0.9 s and 0.04 s on the same 2 cores. On such an adapter the
//! CPU backend runs unless the user forces the GPU.

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
