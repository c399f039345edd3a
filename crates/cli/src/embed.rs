//! `medfm embed` and `medfm search`: vectors of frames or series, and the nearest ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use medfm::jobs::{self, embed::Progress};
use medfm::model::weights::Precision;
use medfm::pipeline::Segmenter;
use medfm::pipeline::embed::{self, Embedder};

use crate::common::bail_input;
use crate::common::{DeviceArgs, load_sam, select_device, weights_path};
use crate::output::{Outputs, write_atomic};

/// `--pool`: which output of a DINOv2 model becomes the vector.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolArg {
    /// The CLS token after the final LayerNorm.
    Cls,
    /// The mean of the patch tokens.
    Mean,
}

/// `--per`: one vector per frame or per series.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Per {
    /// Every frame.
    Frame,
    /// The normalised mean of a series' frames.
    Series,
}

impl Per {
    fn name(self) -> &'static str {
        match self {
            Per::Frame => "frame",
            Per::Series => "series",
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct EmbedArgs {
    /// DICOM files or folders (searched recursively; non-DICOM files are skipped with a note).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
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
    #[arg(long, value_enum, default_value_t = PoolArg::Cls)]
    pool: PoolArg,
    /// One vector per frame, or one per series (normalised mean of its frames).
    #[arg(long, value_enum, default_value_t = Per::Frame)]
    per: Per,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
pub(crate) struct SearchArgs {
    /// Index prefix: reads PREFIX.npy and PREFIX.jsonl; or a folder: every NAME.npy there
    /// with its NAME.jsonl, as one index (the edge node's `<spool>/.node/index`); or a
    /// Parquet file or a folder of them (`medfm batch --job embed`'s `OUT/embeddings`),
    /// searched by the Python package (`$MEDFM_PYTHON -m medfm.index`).
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
    #[arg(long, value_enum, default_value_t = PoolArg::Cls)]
    pool: PoolArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Load the fp32 model on the chosen device, with a spinner.
pub(crate) fn load_segmenter(device: DeviceArgs) -> Result<(Segmenter, String)> {
    let (device, name) = select_device(device)?;
    let sam = load_sam(
        &weights_path(None, Precision::Fp32)?,
        &device,
        Some(Precision::Fp32),
        false,
    )?;
    Ok((Segmenter::new(sam, device), name))
}

/// The embedding model of `embed` / `search`: `litemedsam` or `dinov2:DIR`, loaded on the
/// chosen device.
fn load_embedder(model: &str, pool: PoolArg, device: DeviceArgs) -> Result<(Embedder, String)> {
    if model == "litemedsam" {
        let (seg, name) = load_segmenter(device)?;
        return Ok((Embedder::LiteMedSam(Box::new(seg)), name));
    }
    let Some(dir) = model.strip_prefix("dinov2:") else {
        bail_input!("--model `{model}`: use `litemedsam` or `dinov2:DIR`");
    };
    let dir = Path::new(dir);
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .with_context(|| format!("reading {} (a Hugging Face DINOv2 directory has config.json and model.safetensors)", dir.join(name).display()))
    };
    let config = String::from_utf8(read("config.json")?).context("config.json is not UTF-8")?;
    let weights = read("model.safetensors")?;
    let pre = std::fs::read_to_string(dir.join("preprocessor_config.json")).ok();
    let pool = match pool {
        PoolArg::Mean => embed::Pool::PatchMean,
        PoolArg::Cls => embed::Pool::Cls,
    };
    let (device, name) = select_device(device)?;
    let e = embed::VitEmbedder::from_files(&config, weights, pre.as_deref(), pool, &device)
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok((Embedder::Vit(Box::new(e)), name))
}

pub(crate) fn cmd_embed(args: EmbedArgs) -> Result<()> {
    let files = medfm::fs::walk(&args.paths)?;
    if files.is_empty() {
        bail_input!("no files under the given paths");
    }
    let mut outputs = Outputs::new(&files);
    outputs.claim(&args.out, "--out")?;
    outputs.claim(&args.meta, "--meta")?;
    let (embedder, device_name) = load_embedder(&args.model, args.pool, args.device)?;
    let pb = ProgressBar::new(files.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} files {elapsed} {msg}").unwrap(),
    );
    let per = match args.per {
        Per::Frame => jobs::embed::Per::Frame,
        Per::Series => jobs::embed::Per::Series,
    };
    let embedded = jobs::embed_files(&embedder, &files, &args.paths, per, &mut |p| match p {
        Progress::File(file) => pb.set_message(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Progress::Skipped {
            file,
            frame: None,
            error,
        } => pb.suspend(|| eprintln!("skipping {}: {error}", file.display())),
        Progress::Skipped {
            file,
            frame: Some(f),
            error,
        } => pb.suspend(|| eprintln!("skipping {} frame {f}: {error}", file.display())),
        Progress::Done(_) => pb.inc(1),
    });
    pb.finish_and_clear();
    let jobs::embed::Embedded { index, skipped } = embedded?;
    write_atomic(&args.out, &index.to_npy())?;
    write_atomic(&args.meta, index.to_jsonl().as_bytes())?;
    println!(
        "{} vectors ({}-d, {}, per {}) -> {} + {} on {device_name}; {skipped} skipped",
        index.len(),
        index.dim,
        args.model,
        args.per.name(),
        args.out.display(),
        args.meta.display()
    );
    Ok(())
}

pub(crate) fn cmd_search(args: SearchArgs) -> Result<()> {
    if is_parquet(&args.index) {
        return search_parquet(args);
    }
    let index = if args.index.is_dir() {
        let (index, warnings) = embed::Index::read_folder(&args.index)?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        index
    } else {
        embed::Index::read(
            &args.index.with_extension("npy"),
            &args.index.with_extension("jsonl"),
        )?
    };
    let bytes =
        std::fs::read(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let image = medfm::dicom::read(&bytes).with_context(|| args.query.display().to_string())?;
    let (embedder, _) = load_embedder(&args.model, args.pool, args.device)?;
    let q = embedder.frame_vector(&image, args.frame)?;
    if q.len() != index.dim {
        bail_input!(
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

/// Is `index` a Parquet index (a `.parquet` file, or a folder holding one): the batch's
/// `OUT/embeddings`?
fn is_parquet(index: &Path) -> bool {
    let parquet = |p: &Path| p.extension().is_some_and(|e| e == "parquet");
    if index.is_dir() {
        std::fs::read_dir(index).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| parquet(&e.path()) && !e.file_name().to_string_lossy().starts_with('.'))
        })
    } else {
        parquet(index)
    }
}

/// `search` of a Parquet index: the query's vector here (the pinned fp32 LiteMedSAM, the
/// batch's default model), the search by the Python package, which reads Parquet
/// (`python -m medfm.index`: only the index's vectors of the same weights).
fn search_parquet(args: SearchArgs) -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    if args.model != "litemedsam" {
        bail_input!(
            "{} is a Parquet index (the batch's LiteMedSAM vectors): search it with --model litemedsam",
            args.index.display()
        );
    }
    let python = crate::batch::python_with("medfm.index")
        .map_err(|m| medfm::Error::new(medfm::ErrorKind::Io, m))?;
    let bytes =
        std::fs::read(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let image = medfm::dicom::read(&bytes).with_context(|| args.query.display().to_string())?;
    let (embedder, _) = load_embedder(&args.model, args.pool, args.device)?;
    let q = embedder.frame_vector(&image, args.frame)?;
    let sha = medfm::model::weights::pinned_sha256(Precision::Fp32);
    let mut child = Command::new(&python)
        .args(["-m", "medfm.index", "--index"])
        .arg(&args.index)
        .args(["-k", &args.k.to_string(), "--weights-sha256", sha])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.to_string_lossy()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(serde_json::to_string(&q)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let kind = if out.status.code() == Some(2) {
            medfm::ErrorKind::BadInput
        } else {
            medfm::ErrorKind::Io
        };
        return Err(medfm::Error::new(
            kind,
            format!(
                "searching {}: {}",
                args.index.display(),
                why.strip_prefix("error: ").unwrap_or(why)
            ),
        )
        .into());
    }
    let hits: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&out.stdout).context("the Python search's answer")?;
    if args.json {
        let list: Vec<_> = hits
            .into_iter()
            .map(|mut entry| {
                let score = entry.remove("score").unwrap_or_default();
                serde_json::json!({ "score": score, "entry": entry })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let text = |h: &serde_json::Map<String, serde_json::Value>, k: &str| {
        h.get(k).map_or_else(String::new, |v| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
    };
    for (rank, h) in hits.iter().enumerate() {
        let score = h.get("score").and_then(|s| s.as_f64()).unwrap_or(f64::NAN);
        println!(
            "{:>2}  {score:.4}  series {}  frame {}  {}",
            rank + 1,
            text(h, "series_uid"),
            text(h, "frame"),
            text(h, "sop_instance_uid")
        );
    }
    Ok(())
}
