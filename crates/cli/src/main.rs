//! `medfm`: the native command-line shell (edge boxes, batch jobs).
//!
//! Thin: each command (one file each) parses its arguments, calls the library and prints.
//! Exit codes by the kind of error: 2 bad input (DICOM, prompt, arguments), 3 weights
//! (missing, unpinned, unreadable), 4 device, 5 input/output (files), 1 anything else.

mod batch;
mod bench;
mod common;
mod convert;
mod dicomweb;
mod embed;
mod fetch;
mod info;
mod node;
mod output;
mod propagate;
mod segment;
mod segments;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bench::{BenchArgs, BenchDecodeArgs};
use convert::ConvertArgs;
use embed::{EmbedArgs, SearchArgs};
use fetch::WeightsCmd;
use info::InfoArgs;
use segment::SegmentArgs;

#[derive(Parser)]
#[command(
    name = "medfm",
    version,
    about = "Medical-imaging foundation models where the images are: LiteMedSAM segmentation of DICOM on the local GPU (wgpu) or CPU."
)]
struct Cli {
    /// Print the pipeline's steps (read, decode, preprocess, encode, decode_mask, write)
    /// with their times on stderr; -vv for more. RUST_LOG (e.g. `medfm=debug`) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(flatten)]
    auth: dicomweb::AuthArgs,
    #[command(subcommand)]
    command: Cmd,
}

/// The `-v` / RUST_LOG subscriber: each closed span of the library on stderr with its
/// time. Without either, nothing is installed (the output stays as it is).
fn init_tracing(verbose: u8, service: bool) {
    use tracing_subscriber::{EnvFilter, fmt::format::FmtSpan};
    let filter = match (EnvFilter::try_from_default_env(), verbose) {
        (Ok(f), _) => f,
        // A service logs what it does (docs/node.md) without being asked.
        (Err(_), 0) if service => EnvFilter::new("medfm=info,warn"),
        (Err(_), 0) => return,
        (Err(_), 1) => EnvFilter::new("medfm=info,warn"),
        (Err(_), _) => EnvFilter::new("medfm=debug,info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
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
    /// Search a DICOMweb server (QIDO-RS): studies at the service root, the series of a
    /// study URL, the instances of a series URL.
    Query(dicomweb::QueryArgs),
    /// Send DICOM files to a DICOMweb server (STOW-RS) and print what it did with each.
    Store(dicomweb::StoreArgs),
    /// Run the edge node: a DICOM listener (C-ECHO, C-STORE) that keeps every
    /// acknowledged instance durably in its spool (docs/node.md).
    Node(node::NodeArgs),
    /// Embed or segment every series of a manifest or folder tree on Ray Data: runs the
    /// Python package's `python -m medfm.batch` ($MEDFM_PYTHON, default python3) with these
    /// arguments (`medfm batch --help` lists them; docs/python.md).
    Batch(batch::BatchArgs),
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

/// The documented exit code of an error (see the module docs): the kind of the first
/// error of its chain whose kind is known ([`medfm::Error::kind_of`]), else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(medfm::Error::kind_of)
        .map_or(1, medfm::ErrorKind::exit_code)
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(cli.verbose, matches!(cli.command, Cmd::Node(_)));
    let auth = cli.auth;

    // DICOMweb URLs given to segment and embed are retrieved into private temporary folders
    // first, which live until the end; info and convert take them in memory as they arrive.
    let result = match cli.command {
        Cmd::Batch(args) => return batch::cmd_batch(args),
        Cmd::Segment(mut args) => dicomweb::fetch_image(&mut args.image, args.propagate, &auth)
            .and_then(|_held| segment::cmd_segment(args)),
        Cmd::Bench(args) => bench::cmd_bench(args),
        Cmd::Embed(mut args) => {
            dicomweb::fetch_urls(&mut args.paths, &auth).and_then(|_held| embed::cmd_embed(args))
        }
        Cmd::Search(args) => embed::cmd_search(args),
        Cmd::Info(args) => info::cmd_info(args, &auth),
        Cmd::Convert(args) => convert::cmd_convert(args, &auth),
        Cmd::Query(args) => dicomweb::cmd_query(args, &auth),
        Cmd::Store(args) => dicomweb::cmd_store(args, &auth),
        Cmd::BenchDecode(args) => bench::cmd_bench_decode(args),
        Cmd::Node(args) => node::cmd_node(args),
        Cmd::Weights(WeightsCmd::Fetch {
            pth,
            dir,
            allow_other_checkpoint,
        }) => fetch::cmd_fetch(pth, dir, allow_other_checkpoint),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
