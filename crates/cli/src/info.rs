//! `medfm info`: what DICOM files or folders hold, without patient identifiers.

use std::path::PathBuf;

use anyhow::{Context, Result};

use medfm::dicom::{DicomImage, is_uid};
use medfm::dicomweb::url::Resource;

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
    let (urls, files) = dicomweb::split_inputs(&args.paths)?;
    let mut catalog = medfm::dicom::catalog::Catalog::new(args.show_patient_ids);
    let mut not_dicom = Vec::new();
    let mut not_part10 = 0usize;
    let mut add = |name: String, read: Result<DicomImage, medfm::dicom::Error>| match read {
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
        let resource = Resource::parse(url)?;
        dicomweb::retrieve_each(url, auth, |n, body| {
            // Parsed once; only what is not a readable image is parsed again for its UIDs.
            let read = medfm::dicom::read(&body);
            let uids = match &read {
                Ok(image) => {
                    let m = &image.meta;
                    [
                        &m.study_instance_uid,
                        &m.series_instance_uid,
                        &m.sop_instance_uid,
                    ]
                    .iter()
                    .all(|u| is_uid(u))
                    .then(|| (m.series_instance_uid.clone(), m.sop_instance_uid.clone()))
                }
                Err(_) => medfm::dicom::identify(&body)
                    .ok()
                    .map(|ids| (ids.series_instance_uid, ids.sop_instance_uid)),
            };
            let name = match uids {
                Some((series, instance)) => Resource::path_of(
                    &Resource {
                        series: Some(series),
                        instance: Some(instance),
                        ..resource.clone()
                    }
                    .url(),
                ),
                None => format!("{} (instance {n})", Resource::path_of(url)),
            };
            add(name, read);
            Ok(())
        })?;
    }
    for file in &files {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
        add(name, medfm::dicom::read(&bytes));
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
