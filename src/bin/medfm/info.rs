//! `medfm info`: what DICOM files or folders hold, without patient identifiers.

use std::path::PathBuf;

use anyhow::{Context, Result};

use medfm::dicomweb::url::Resource;

use crate::common::collect_files;
use crate::dicomweb::{self, AuthArgs};

#[derive(clap::Args)]
pub(crate) struct InfoArgs {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show PatientID instead of "patient N".
    #[arg(long)]
    show_patient_ids: bool,
}

pub(crate) fn cmd_info(args: InfoArgs, auth: &AuthArgs) -> Result<()> {
    let (urls, local): (Vec<PathBuf>, Vec<PathBuf>) = args
        .paths
        .iter()
        .cloned()
        .partition(|p| dicomweb::is_url(p));
    let files = if local.is_empty() {
        Vec::new()
    } else {
        collect_files(&local)?
    };
    let mut catalog = medfm::dicom::catalog::Catalog::new(args.show_patient_ids);
    let mut not_dicom = Vec::new();
    let mut not_part10 = 0usize;
    let mut add = |name: String, bytes: &[u8]| match medfm::dicom::read(bytes) {
        Ok(image) => {
            let decode = image.frame(0).map(|_| ()).map_err(|e| e.to_string());
            catalog.add(&name, &image, decode);
        }
        Err(medfm::dicom::Error::NotDicom(_)) => not_part10 += 1,
        Err(e) => not_dicom.push((name, e.to_string())),
    };
    // DICOMweb: each instance is looked at as it arrives and not kept; it is named by its
    // own URL (without the server), else by its number in the answer.
    for url in &urls {
        let url = url.to_string_lossy();
        let resource = Resource::parse(&url)?;
        dicomweb::retrieve_each(&url, auth, |n, body| {
            let name = match medfm::dicom::identify(&body) {
                Ok(ids) => Resource::path_of(
                    &Resource {
                        series: Some(ids.series_instance_uid),
                        instance: Some(ids.sop_instance_uid),
                        ..resource.clone()
                    }
                    .url(),
                ),
                Err(_) => format!("{} (instance {n})", Resource::path_of(&url)),
            };
            add(name, &body);
            Ok(())
        })?;
    }
    for file in &files {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
        add(name, &bytes);
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
