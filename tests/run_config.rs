//! The run configuration (`medfm::RunConfig`) is the process's: the first one applied sets
//! the CPU threads and selects the device (reported), the same one again gets the same
//! device, and another is refused with an error saying what runs. Its own test binary: a
//! fresh process, where nothing has run the CPU backend yet.

use medfm::pipeline::device::DeviceChoice;
use medfm::{ErrorKind, RunConfig};

#[test]
fn a_process_runs_one_configuration_given_as_values() {
    let cpu = RunConfig {
        threads: Some(1),
        device: DeviceChoice::Cpu,
    };
    let selected = cpu.apply().expect("the CPU backend");
    assert!(!selected.gpu);
    assert_eq!(selected.name, "cpu (flex)");
    assert_eq!(medfm::model::cpu_threads(), 1, "the kernels use the value");
    assert_eq!(cpu.apply().expect("the same again").name, "cpu (flex)");
    for other in [
        RunConfig {
            threads: Some(2),
            ..cpu
        },
        RunConfig {
            device: DeviceChoice::Gpu,
            ..cpu
        },
        RunConfig {
            threads: None,
            ..cpu
        },
    ] {
        let e = other.apply().expect_err("another configuration");
        assert_eq!(e.kind(), ErrorKind::Device, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("already runs cpu (flex) with 1 threads")
                && text.contains("one run configuration per process"),
            "{text}"
        );
    }
    assert_eq!(medfm::model::cpu_threads(), 1, "unchanged by the refusals");
}
