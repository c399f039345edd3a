//! `medfm convert`: a series to NIfTI-1, or one frame to an 8-bit PNG through its VOI.

use std::path::PathBuf;

use anyhow::Result;
use medfm::dicom::DicomImage;
use medfm::dicom::lut::{Voi, Window};

use crate::common::bail_input;
use crate::common::parse_floats;
use crate::dicomweb::{self, AuthArgs};
use crate::output::{Outputs, nifti_bytes, write_atomic, write_png};

#[derive(clap::Args)]
pub(crate) struct ConvertArgs {
    /// DICOM files or folders (searched recursively); one series for NIfTI.
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Output: `.nii`, `.nii.gz` or `.png`.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Frame for PNG output (0-based).
    #[arg(long, default_value_t = 0)]
    pub(crate) frame: u32,
    /// Window for PNG output: CENTER,WIDTH (LINEAR); overrides the file's VOI.
    #[arg(long, value_name = "C,W", conflicts_with = "voi")]
    window: Option<String>,
    /// Which of the frame's VOIs to use for PNG output (0-based, as `medfm info --json`
    /// lists them: windows with their explanation, then VOI LUT tables). Default: the
    /// first, else the frame's min..max.
    #[arg(long, value_name = "N")]
    voi: Option<usize>,
}

/// The inputs' images, each parsed once. `urls` (DICOMweb) are retrieved by WADO-RS and
/// parsed in memory as each instance arrives (no temporary file); for a PNG of one
/// instance URL only its frame `--frame` is fetched (WADO-RS metadata and frames: a large
/// multi-frame instance is not downloaded whole), and `frame` becomes 0. `files` are read.
/// An instance or file that is not readable DICOM is skipped, as stderr says.
fn load(
    urls: &[String],
    files: &[PathBuf],
    frame: &mut u32,
    png: bool,
    auth: &AuthArgs,
) -> Result<Vec<DicomImage>> {
    let mut images = Vec::new();
    if png
        && files.is_empty()
        && let [url] = urls
        && let Some(bytes) = dicomweb::fetch_frame(url, *frame, auth)?
    {
        images.push(medfm::dicom::read(&bytes)?);
        *frame = 0;
        return Ok(images);
    }
    for url in urls {
        dicomweb::retrieve_each(url, auth, |n, body| {
            match medfm::dicom::read(&body) {
                Ok(i) => images.push(i),
                Err(e) => eprintln!("skipping instance {n} of {url}: {e}"),
            }
            Ok(())
        })?;
    }
    for (file, read) in files.iter().zip(medfm::jobs::Series::read_files(files)) {
        match read {
            Ok(i) => images.push(i),
            // A file that cannot be read stops the command; one that is not DICOM is passed over.
            Err(e) if e.kind() != medfm::ErrorKind::BadInput => return Err(e.into()),
            Err(e) => eprintln!("skipping {}: {e}", file.display()),
        }
    }
    Ok(images)
}

pub(crate) fn cmd_convert(mut args: ConvertArgs, auth: &AuthArgs) -> Result<()> {
    let name = args.out.to_string_lossy().to_lowercase();
    let png = name.ends_with(".png");
    let (urls, files) = dicomweb::split_inputs(&args.paths)?;
    // Checked before anything is read or retrieved: a bad --out costs no transfer.
    Outputs::new(&files).claim(&args.out, "--out")?;
    if !(png || name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail_input!("--out must end in .nii, .nii.gz or .png");
    }
    let images = load(&urls, &files, &mut args.frame, png, auth)?;
    if images.is_empty() {
        bail_input!("no readable DICOM file under the given paths");
    }
    if png {
        if images.len() != 1 {
            bail_input!("PNG output takes one DICOM file, got {}", images.len());
        }
        let image = &images[0];
        let frame = image.frame(args.frame)?;
        if frame.channels != 1 {
            let rgb = medfm::dicom::lut::render(&frame, None, &image.meta.photometric);
            return write_png(
                &args.out,
                frame.cols,
                frame.rows,
                png::ColorType::Rgb,
                &rgb.pixels,
            );
        }
        let (vois, skipped) = image.vois(args.frame)?;
        for p in &skipped {
            eprintln!("warning: skipping the file's window: {p}");
        }
        let voi = match (&args.window, args.voi) {
            (Some(w), _) => {
                let v = parse_floats(w, "--window")?;
                if v.len() != 2 {
                    bail_input!("--window takes CENTER,WIDTH, got `{w}`");
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
        let grey = medfm::dicom::lut::render(&frame, voi.as_ref(), &image.meta.photometric);
        let invert = grey.inverted;
        write_png(
            &args.out,
            frame.cols,
            frame.rows,
            png::ColorType::Grayscale,
            &grey.pixels,
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
    let volume = medfm::dicom::volume::assemble(&images)?;
    for w in &volume.warnings {
        eprintln!("warning: {w}");
    }
    write_atomic(&args.out, &nifti_bytes(&volume, &args.out)?)?;
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
