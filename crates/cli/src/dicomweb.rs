//! DICOMweb for the command line: `medfm query` (QIDO-RS), `medfm store` (STOW-RS), and
//! DICOMweb URLs wherever a command takes DICOM files (WADO-RS retrieve). The protocol is
//! the core's (`medfm::dicomweb`), the transport medfm-dicomweb-client's; this file turns
//! arguments into their calls and prints.
//!
//! Credentials come from `--token` / `MEDFM_DICOMWEB_TOKEN` (a bearer token) or `--user
//! USER:PASSWORD` / `MEDFM_DICOMWEB_USER` (basic); they are sent as a header and never
//! printed, logged or written. A retrieved study or series is written to a private
//! temporary folder (mode 0700) that is removed when the command ends.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use medfm::dicomweb::url::{Level, Query, Resource};
use medfm::dicomweb::{Error, frames, json};
use medfm::fs::TempDir;
use medfm_dicomweb_client::{Auth, Client, origin_of};

use crate::common::bail_input;

/// Credentials for the server.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct AuthArgs {
    /// Bearer token for DICOMweb URLs (default: $MEDFM_DICOMWEB_TOKEN).
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Basic credentials USER:PASSWORD for DICOMweb URLs (default: $MEDFM_DICOMWEB_USER).
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    user: Option<String>,
    /// Transfer syntax UID to retrieve DICOMweb instances in (the server transcodes, or
    /// refuses with 406). Default: as stored.
    #[arg(long, global = true, value_name = "UID")]
    transfer_syntax: Option<String>,
}

impl AuthArgs {
    /// The client with these credentials (the environment's where none are given).
    pub(crate) fn client(&self) -> Result<Client> {
        Ok(Client::new(Auth::new(
            self.token.clone(),
            self.user.clone(),
        )?))
    }
}

#[derive(clap::Args)]
pub(crate) struct QueryArgs {
    /// The DICOMweb service root (lists studies), a study URL (its series) or a series URL
    /// (its instances).
    url: String,
    /// PatientID (wildcards * and ?).
    #[arg(long)]
    patient: Option<String>,
    /// PatientName (wildcards * and ?).
    #[arg(long)]
    name: Option<String>,
    /// StudyDate YYYYMMDD or a range YYYYMMDD-YYYYMMDD.
    #[arg(long)]
    date: Option<String>,
    /// Modality (ModalitiesInStudy for studies).
    #[arg(long)]
    modality: Option<String>,
    /// AccessionNumber.
    #[arg(long)]
    accession: Option<String>,
    /// At most this many results.
    #[arg(long)]
    limit: Option<u32>,
    /// Skip this many results.
    #[arg(long)]
    offset: Option<u32>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_query(args: QueryArgs, auth: &AuthArgs) -> Result<()> {
    let resource = Resource::parse(&args.url)?;
    let query = Query {
        patient_id: args.patient,
        patient_name: args.name,
        date: args.date,
        modality: args.modality,
        accession: args.accession,
        limit: args.limit,
        offset: args.offset,
    };
    let client = auth.client()?;
    let level = match (&resource.study, &resource.series) {
        (None, _) => Level::Studies,
        (Some(_), None) => Level::Series,
        (Some(_), Some(_)) => Level::Instances,
    };
    let url = query.url(&resource, level)?;
    let body = client.get_json(&url)?;
    let out: serde_json::Value = match level {
        Level::Studies => {
            let list = json::studies(&body)?;
            if !args.json {
                for s in &list {
                    println!(
                        "{}  {}  {}  {}  {}  {} series  {}",
                        s.uid,
                        s.patient_id,
                        s.date,
                        s.modalities.join("\\"),
                        s.accession,
                        s.series.map_or("?".into(), |n| n.to_string()),
                        s.description
                    );
                }
            }
            serde_json::to_value(&list)?
        }
        Level::Series => {
            let list = json::series(&body)?;
            if !args.json {
                for s in &list {
                    println!(
                        "{}  {}  #{}  {} instances  {}",
                        s.uid,
                        s.modality,
                        s.number.map_or("?".into(), |n| n.to_string()),
                        s.instances.map_or("?".into(), |n| n.to_string()),
                        s.description
                    );
                }
            }
            serde_json::to_value(&list)?
        }
        Level::Instances => {
            let list = json::instances(&body)?;
            if !args.json {
                for s in &list {
                    println!(
                        "{}  #{}  {} frame(s)  {}",
                        s.uid,
                        s.number.map_or("?".into(), |n| n.to_string()),
                        s.frames.unwrap_or(1),
                        s.sop_class
                    );
                }
            }
            serde_json::to_value(&list)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!("{} result(s)", out.as_array().map_or(0, Vec::len));
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// DICOM files to send (Part 10).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The DICOMweb service root (STOW-RS to ROOT/studies).
    #[arg(long)]
    to: String,
    /// Print the per-instance results as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_store(args: StoreArgs, auth: &AuthArgs) -> Result<()> {
    let url = Resource::parse(&args.to)?.stow_url();
    let client = auth.client()?;
    let mut bodies = Vec::with_capacity(args.files.len());
    for f in &args.files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        medfm::dicom::read(&bytes).with_context(|| f.display().to_string())?;
        bodies.push(bytes);
    }
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let (status, results) = client.store(&args.to, &refs)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"status": status, "instances": results})
            )?
        );
    } else {
        for r in &results {
            println!(
                "{:<8} {}{}",
                r.status,
                r.uid,
                r.reason
                    .as_deref()
                    .map_or(String::new(), |x| format!(" (reason {x})"))
            );
        }
    }
    let failed = results.iter().filter(|r| r.status == "failure").count();
    if failed > 0 {
        anyhow::bail!(Error::Http {
            method: "POST",
            path: Resource::path_of(&url),
            status,
            message: format!("{failed} of {} instance(s) failed", bodies.len()),
        });
    }
    Ok(())
}

/// DICOMweb URLs among `paths` retrieved into temporary folders, each replaced by its
/// folder; the returned folders must live as long as the paths are used.
pub(crate) fn fetch_urls(paths: &mut [PathBuf], auth: &AuthArgs) -> Result<Vec<TempDir>> {
    let mut held = Vec::new();
    for p in paths.iter_mut() {
        if is_url(p) {
            let url = p.to_string_lossy().into_owned();
            let (dir, _) = retrieve(&url, auth)?;
            *p = dir.path().to_path_buf();
            held.push(dir);
        }
    }
    Ok(held)
}

/// One frame of an instance URL (`frame`, 0-based as `--frame`), alone: its metadata
/// and that frame by WADO-RS (`…/metadata`, `…/frames/N`), joined in memory into a
/// single-frame Part 10 file (its frame 0). `None` when `url` is not an instance URL, or
/// when the server does not offer frames or metadata (then the caller retrieves the whole
/// instance, as this said on stderr).
pub(crate) fn fetch_frame(url: &str, frame: u32, auth: &AuthArgs) -> Result<Option<Vec<u8>>> {
    let resource = Resource::parse(url)?;
    if resource.instance.is_none() {
        return Ok(None);
    }
    let client = auth.client()?;
    // A server without the frames service answers 4xx / 5xx there; the credentials'
    // refusals (401, 403) are errors as anywhere.
    let unsupported =
        |e: &Error| matches!(e, Error::Http { status, .. } if ![401, 403, 404].contains(status));
    let meta_url = resource.metadata_url()?;
    let metadata = match client.get_json(&meta_url) {
        Ok(body) => json::parse(&body)?.into_iter().next().ok_or_else(|| {
            Error::Json(format!(
                "GET {}: no attributes in the answer",
                Resource::path_of(&meta_url)
            ))
        })?,
        Err(e) if unsupported(&e) => {
            eprintln!("medfm: {e}: no metadata service, retrieving the whole instance");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let frames = metadata.number("00280008").unwrap_or(1).max(1);
    if u64::from(frame) >= frames {
        bail_input!(
            "--frame {frame}: {} has frames 0..{} ({frames})",
            Resource::path_of(url),
            frames - 1
        );
    }
    let number = frame + 1;
    let (ct, parts) = match client.get_parts(&resource.frames_url(&[number])?, frames::ACCEPT) {
        Ok(r) => r,
        Err(e) if unsupported(&e) => {
            eprintln!("medfm: {e}: no frames service, retrieving the whole instance");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let got = frames::frames(&[number], &ct, parts)?;
    // Bulk data (a LUT, an overlay) comes from the same server only: the credentials go
    // nowhere else.
    let origin = origin_of(&resource.base);
    let mut bulk = |uri: &str| -> Result<Vec<u8>, Error> {
        let absolute = if uri.starts_with('/') {
            format!("{origin}{uri}")
        } else {
            uri.to_string()
        };
        if origin_of(&absolute) != origin {
            return Err(Error::Url(format!(
                "the metadata points to bulk data on another server ({}): refused",
                Resource::path_of(&absolute)
            )));
        }
        let (_, mut parts) = client.get_parts(
            &absolute,
            "multipart/related; type=\"application/octet-stream\"",
        )?;
        if parts.len() != 1 {
            return Err(Error::Multipart(format!(
                "GET {}: {} parts for one bulk data value",
                Resource::path_of(&absolute),
                parts.len()
            )));
        }
        Ok(parts.remove(0).body)
    };
    let bytes = frames::single_frame(&metadata, &got[0], &mut bulk)
        .with_context(|| format!("frame {frame} of {}", Resource::path_of(url)))?;
    tracing::info!(
        frame,
        bytes = got[0].bytes.len(),
        transfer_syntax = got[0].transfer_syntax.as_str(),
        "retrieved one frame of {}",
        Resource::path_of(url)
    );
    Ok(Some(bytes))
}

/// For `medfm segment URL`: an instance URL is retrieved (with `--propagate`, its whole
/// series, the instance among it) and `image` becomes its file.
pub(crate) fn fetch_image(
    image: &mut Option<PathBuf>,
    series: bool,
    auth: &AuthArgs,
) -> Result<Option<TempDir>> {
    let Some(p) = image.as_mut().filter(|p| is_url(p)) else {
        return Ok(None);
    };
    let url = p.to_string_lossy().into_owned();
    let mut r = Resource::parse(&url)?;
    let Some(instance) = r.instance.clone() else {
        bail_input!(
            "{url}: segment takes an instance URL (…/studies/UID/series/UID/instances/UID)"
        );
    };
    if series {
        r.instance = None;
    }
    let (dir, _) = retrieve(&r.url(), auth)?;
    let file = dir.path().join(format!("{instance}.dcm"));
    if !file.exists() {
        bail_input!("{url}: the server's series does not hold instance {instance}");
    }
    *p = file;
    Ok(Some(dir))
}

/// The inputs of a command that takes DICOMweb URLs beside files and folders: the URLs as
/// given, and the files below the other paths ([`medfm::fs::walk`]).
pub(crate) fn split_inputs(paths: &[PathBuf]) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let (urls, local): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| is_url(p));
    let local: Vec<PathBuf> = local.into_iter().cloned().collect();
    let files = if local.is_empty() {
        Vec::new()
    } else {
        medfm::fs::walk(&local)?
    };
    Ok((
        urls.iter()
            .map(|u| u.to_string_lossy().into_owned())
            .collect(),
        files,
    ))
}

/// Is `s` a DICOMweb URL (rather than a path)?
pub(crate) fn is_url(s: &Path) -> bool {
    s.to_str().is_some_and(medfm_dicomweb_client::is_url)
}

/// WADO-RS retrieve of `url` (a study, series or instance) into a private temporary folder,
/// one `SOPInstanceUID.dcm` per instance, streamed part by part. Returns the folder and
/// the files in the order received.
pub(crate) fn retrieve(url: &str, auth: &AuthArgs) -> Result<(TempDir, Vec<PathBuf>)> {
    let dir = TempDir::new("wado")?;
    let mut files = Vec::new();
    let target = Resource::parse(url)?.url();
    retrieve_each(url, auth, |n, body| {
        let ids = medfm::dicom::identify(&body)
            .with_context(|| format!("instance {n} of {}", Resource::path_of(&target)))?;
        let path = dir.path().join(format!("{}.dcm", ids.sop_instance_uid));
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
        Ok(())
    })?;
    Ok((dir, files))
}

/// WADO-RS retrieve of `url` (a study, series or instance), streamed
/// ([`Client::retrieve_each`]) with a progress spinner on stderr.
pub(crate) fn retrieve_each(
    url: &str,
    auth: &AuthArgs,
    each: impl FnMut(usize, Vec<u8>) -> Result<()>,
) -> Result<usize> {
    let client = auth.client()?;
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template(
        "{spinner} retrieving {prefix}: {msg} instance(s), {bytes} {elapsed}",
    )?);
    pb.set_prefix(Resource::path_of(url));
    pb.set_message("0");
    let count = client.retrieve_each(url, auth.transfer_syntax.as_deref(), each, |bytes, n| {
        pb.set_position(bytes);
        pb.set_message(n.to_string());
    })?;
    pb.finish_and_clear();
    Ok(count)
}
