//! `medfm bench` and `medfm bench-decode`: timings of the model and of DICOM decoding
//! (BENCHMARKS.md compares them with peers).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use medfm::Device;
use medfm::model::weights::Precision;
use medfm::pipeline::PixelPrompt;
use medfm::pipeline::Segmenter;

use crate::common::bail_input;
use crate::common::{DeviceArgs, load_sam, parse_box, select_device, weights_path};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Weight precision.
    #[arg(long, value_parser = crate::common::precision_parser(), default_value = "fp32")]
    precision: Precision,
    /// Timed repetitions of each stage (after one warm-up).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// DICOM file to use (default: the bundled abdominal MR).
    #[arg(long, default_value = "tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm")]
    image: PathBuf,
    /// Box prompt X0,Y0,X1,Y1 (default: the kidney box of the sample).
    #[arg(long = "box", default_value = "110,280,190,355")]
    bbox: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct BenchDecodeArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Timed runs per file (after one warm-up).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print JSON lines (file, ms median/min/max, frames, error) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_bench(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail_input!("--runs must be at least 1");
    }
    let precision = args.precision;
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let prompt = PixelPrompt {
        bbox: Some(parse_box(&args.bbox)?),
        points: vec![],
        multimask: false,
    };
    let wpath = weights_path(None, precision)?;
    let (device, device_name) = select_device(args.device)?;
    let sync = |d: &Device| {
        d.sync()
            .map_err(|e| crate::common::device_error(format!("device sync failed: {e:?}")))
    };

    // Cold start: weights file -> model -> first embed -> first mask.
    let t = Instant::now();
    let seg = Segmenter::new(
        load_sam(&wpath, &device, Some(precision), false)?,
        device.clone(),
    );
    let image = medfm::dicom::read(&bytes)?;
    let pre = seg.prepare(&image, 0)?;
    let emb = seg.embed(&pre)?;
    let first = seg.segment(&emb, &pre, &prompt)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut enc = Vec::new();
    let mut dec = Vec::new();
    let mut e2e = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let e = seg.embed(&pre)?;
        sync(&device)?;
        enc.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        seg.segment(&e, &pre, &prompt)?;
        dec.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let image = medfm::dicom::read(&bytes)?;
        let pre = seg.prepare(&image, 0)?;
        let e = seg.embed(&pre)?;
        seg.segment(&e, &pre, &prompt)?;
        e2e.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let report = serde_json::json!({
        "tool": "medfm",
        "device": device_name,
        "precision": precision.name(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "image": args.image.display().to_string(),
        "area": first.area,
        "cold_start_ms": cold_ms,
        "encoder": stats(enc),
        "decoder": stats(dec),
        "end_to_end": stats(e2e),
        "peak_rss_mib": peak_rss_mib(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "medfm bench: {device_name}, {} weights, {} runs, mask area {} px",
            precision.name(),
            args.runs,
            first.area
        );
        println!("cold start (load + first mask)  {cold_ms:>9.1} ms");
        for key in ["encoder", "decoder", "end_to_end"] {
            let r = &report[key];
            println!(
                "{key:<31} {:>9.1} ms median  ({:.1}..{:.1})",
                r["median_ms"].as_f64().unwrap_or(0.0),
                r["min_ms"].as_f64().unwrap_or(0.0),
                r["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(rss) = peak_rss_mib() {
            println!("peak RSS                        {rss:>9.1} MiB");
        }
    }
    Ok(())
}

pub(crate) fn cmd_bench_decode(args: BenchDecodeArgs) -> Result<()> {
    if args.runs == 0 {
        bail_input!("--runs must be at least 1");
    }
    let mut files = medfm::fs::walk(&args.paths)?;
    files.sort();
    for file in files {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let once = || -> Result<u32, medfm::dicom::Error> {
            let image = medfm::dicom::read(&bytes)?;
            for f in 0..image.meta.frames {
                std::hint::black_box(image.frame(f)?);
            }
            Ok(image.meta.frames)
        };
        let name = file.display().to_string();
        let frames = match once() {
            Ok(n) => n,
            // Other files of a folder (notes, references) are not benchmarked.
            Err(medfm::dicom::Error::NotDicom(_)) => continue,
            Err(e) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": name, "error": e.to_string()})
                    );
                } else {
                    println!("{name:60} error: {e}");
                }
                continue;
            }
        };
        let mut ms: Vec<f64> = (0..args.runs)
            .map(|_| {
                let t = Instant::now();
                let _ = once();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        if args.json {
            println!(
                "{}",
                serde_json::json!({"file": name, "frames": frames, "ms_median": median,
                    "ms_min": ms[0], "ms_max": ms[ms.len() - 1], "runs": args.runs})
            );
        } else {
            println!(
                "{name:60} {frames:4} frame(s)  median {median:9.3} ms  (min {:.3}, max {:.3})",
                ms[0],
                ms[ms.len() - 1]
            );
        }
    }
    Ok(())
}

/// Median, minimum and maximum of timings in milliseconds.
pub(crate) fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    serde_json::json!({ "median_ms": median, "min_ms": v[0], "max_ms": v[v.len() - 1], "runs": v.len() })
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
