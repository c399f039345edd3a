//! DICOMweb against a real server: Debian's Orthanc with its DICOMweb plugin, started
//! here on 127.0.0.1 with a temporary configuration (its own storage, basic auth on) and
//! loaded with fixture series through its REST API; stopped at the end. The `medfm`
//! command queries it (QIDO-RS), segments and converts from its URLs (WADO-RS) with the
//! results of the local files, stores a SEG (STOW-RS) that a search then finds and a
//! retrieve returns byte for byte; wrong credentials, a missing study, a server that is
//! down and a body cut short each give their own error.

mod common;
#[path = "common/orthanc.rs"]
mod orthanc;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::free_port;
use common::*;
use medfm::dicomweb::multipart;
use orthanc::*;

/// `medfm` with the test credentials.
fn medfm_auth(args: &[&str]) -> (bool, String, String, i32) {
    let out = Command::new(common::medfm_exe())
        .args(args)
        .env("MEDFM_WEIGHTS_DIR", weights_dir())
        .env("MEDFM_DICOMWEB_USER", format!("{USER}:{PASSWORD}"))
        .output()
        .expect("run medfm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn meta(path: &Path) -> medfm::dicom::ImageMeta {
    medfm::dicom::read(&std::fs::read(path).unwrap())
        .unwrap()
        .meta
}

fn patient_and_date(path: &Path) -> (String, String) {
    let obj = dicom_object::open_file(path).unwrap();
    let s = |name: &str| {
        obj.element_by_name(name)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    (s("PatientID"), s("StudyDate"))
}

/// What `stream` sends up to the end of its HTTP head (and whatever followed in the same
/// reads), or until it closes.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    head
}

/// A proxy in front of `upstream` that passes the request on and then only the first
/// `keep` bytes of the answer, then closes: a real response cut short.
fn cutting_proxy(upstream: u16, keep: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let mut buf = [0u8; 4096];
            let req = read_head(&mut client);
            up.write_all(&req).unwrap();
            let mut sent = 0;
            while sent < keep {
                let n = up.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let n = n.min(keep - sent);
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
            }
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

#[test]
fn medfm_against_orthanc() {
    let orthanc = Orthanc::start();
    let series_dir = data("series/brain11");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&series_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    for f in files.iter().chain([&data("CT_small.dcm")]) {
        orthanc.upload(f);
    }
    let start = series_dir.join("brain_010.dcm");
    let m = meta(&start);
    let (patient, date) = patient_and_date(&start);
    let root = orthanc.root();

    // QIDO-RS: the study by PatientID and by a date range; none outside it.
    let (ok, out, err, _) = medfm_auth(&["query", &root, "--patient", &patient, "--json"]);
    assert!(ok, "{err}");
    let studies: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uids: Vec<&str> = studies
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, vec![m.study_instance_uid.as_str()], "{out}");
    assert_eq!(studies[0]["series"], 1);
    let (ok, out, err, _) = medfm_auth(&[
        "query",
        &root,
        "--date",
        &format!("{date}-{date}"),
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&m.study_instance_uid), "{out}");
    let (ok, out, err, _) = medfm_auth(&["query", &root, "--date", "19000101-19000102", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    let study_url = format!("{root}/studies/{}", m.study_instance_uid);
    let series_url = format!("{study_url}/series/{}", m.series_instance_uid);
    let (ok, out, err, _) = medfm_auth(&["query", &series_url, "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        11
    );

    // WADO-RS: segment an instance URL as the local file; convert the series URL as the folder.
    let instance_url = format!("{series_url}/instances/{}", m.sop_instance_uid);
    let (a, b) = (tmp("wado-remote.png"), tmp("wado-local.png"));
    let box_ = "45,60,215,240";
    let (ok, remote, err, _) = medfm_auth(&[
        "segment",
        &instance_url,
        "--box",
        box_,
        "--cpu",
        "--out",
        &a,
        "--json",
    ]);
    assert!(ok, "{err}");
    let local = start.display().to_string();
    let (ok, here, err, _) = medfm_auth(&[
        "segment", &local, "--box", box_, "--cpu", "--out", &b, "--json",
    ]);
    assert!(ok, "{err}");
    let area = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["area"].clone();
    assert_eq!(area(&remote), area(&here));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "the same mask"
    );
    // convert and info take the retrieved instances in memory: a private TMPDIR stays empty.
    let scratch = PathBuf::from(tmp("wado-scratch"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let in_memory = |args: &[&str]| {
        let out = Command::new(common::medfm_exe())
            .args(args)
            .env("MEDFM_DICOMWEB_USER", format!("{USER}:{PASSWORD}"))
            .env("TMPDIR", &scratch)
            .output()
            .expect("run medfm");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "{args:?} wrote temporary files"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (na, nb) = (tmp("wado-remote.nii"), tmp("wado-local.nii"));
    in_memory(&["convert", &series_url, "--out", &na]);
    let (ok, _, err, _) = medfm_auth(&["convert", &series_dir.display().to_string(), "--out", &nb]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&na).unwrap(),
        std::fs::read(&nb).unwrap(),
        "the same volume"
    );
    // info of the series URL: the folder's entry, each instance named by its URL path.
    let remote: serde_json::Value =
        serde_json::from_str(&in_memory(&["info", &series_url, "--json"])).unwrap();
    let (ok, here, err, _) = medfm_auth(&["info", &series_dir.display().to_string(), "--json"]);
    assert!(ok, "{err}");
    let here: serde_json::Value = serde_json::from_str(&here).unwrap();
    let (r, h) = (&remote["series"][0], &here["series"][0]);
    assert_eq!(remote["series"].as_array().unwrap().len(), 1, "{remote}");
    for key in [
        "modality",
        "size",
        "instances",
        "frames",
        "series_uid",
        "study_uid",
    ] {
        assert_eq!(r[key], h[key], "{key}: {remote} vs {here}");
    }
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 11);
    let path = format!(
        "/dicom-web/studies/{}/series/{}/instances/",
        m.study_instance_uid, m.series_instance_uid
    );
    assert!(
        files.iter().all(|f| f.as_str().unwrap().starts_with(&path)),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.as_str().unwrap().ends_with(&m.sop_instance_uid))
    );
    // --propagate from an instance URL runs over the server's series.
    let pr = tmp("wado-propagated.dcm");
    let (ok, out, err, _) = medfm_auth(&[
        "segment",
        &instance_url,
        "--box",
        box_,
        "--propagate",
        "--extent",
        "1",
        "--cpu",
        "--out",
        &pr,
        "--json",
    ]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            j["series_slices"].clone(),
            j["slices"].as_array().unwrap().len()
        ),
        (serde_json::json!(11), 3)
    );

    // STOW-RS: a SEG is stored, found by a search for Modality SEG, retrieved byte for byte.
    let seg = tmp("wado.dcm");
    let (ok, _, err, _) = medfm_auth(&["segment", &local, "--box", box_, "--cpu", "--out", &seg]);
    assert!(ok, "{err}");
    let (ok, out, err, _) = medfm_auth(&["store", &seg, "--to", &root, "--json"]);
    assert!(ok, "{err}");
    let stored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seg_meta = meta(Path::new(&seg));
    assert_eq!(
        stored["instances"][0]["uid"],
        seg_meta.sop_instance_uid.as_str(),
        "{out}"
    );
    assert_eq!(stored["instances"][0]["status"], "success", "{out}");
    let (ok, out, err, _) = medfm_auth(&["query", &study_url, "--modality", "SEG", "--json"]);
    assert!(ok, "{err}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(found[0]["uid"], seg_meta.series_instance_uid.as_str());
    let wado = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        seg_meta.study_instance_uid, seg_meta.series_instance_uid, seg_meta.sop_instance_uid
    );
    let r = Orthanc::agent()
        .get(format!("http://127.0.0.1:{}{wado}", orthanc.http))
        .header("Authorization", basic())
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body = r
        .into_body()
        .into_with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    let mut parser = multipart::Parser::for_content_type(&ct).unwrap();
    let parts = parser.feed(&body).unwrap();
    parser.finish().unwrap();
    assert_eq!(parts.len(), 1);
    assert!(
        parts[0].body == std::fs::read(&seg).unwrap(),
        "the SEG comes back byte for byte"
    );

    // Errors: wrong credentials, a missing study, a server that is down, a body cut short.
    let out = Command::new(common::medfm_exe())
        .args(["query", &root, "--user", "medfm:wrong"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HTTP 401") && err.contains("/dicom-web/studies"),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the password is never printed: {err}"
    );
    assert_eq!(out.status.code(), Some(2));
    let (ok, _, err, code) = medfm_auth(&[
        "convert",
        &format!("{root}/studies/1.2.3.4.5"),
        "--out",
        &tmp("never.nii"),
    ]);
    assert!(
        !ok && err.contains("HTTP 404") && err.contains("/studies/1.2.3.4.5"),
        "{err}"
    );
    assert_eq!(code, 2);
    let down = format!("http://127.0.0.1:{}/dicom-web", free_port());
    let (ok, _, err, code) = medfm_auth(&["query", &down]);
    assert!(!ok && err.contains("is the server running"), "{err}");
    assert_eq!(code, 5);
    let proxy = cutting_proxy(orthanc.http, 20_000);
    let cut = format!(
        "http://127.0.0.1:{proxy}/dicom-web/studies/{}/series/{}",
        m.study_instance_uid, m.series_instance_uid
    );
    let (ok, _, err, code) = medfm_auth(&["convert", &cut, "--out", &tmp("never2.nii")]);
    assert!(!ok && err.contains("truncated"), "{err}");
    assert_eq!(code, 5);
    assert!(!err.contains("panicked"));
    for p in [a, b, na, nb, pr, seg] {
        std::fs::remove_file(p).ok();
    }
}

/// A proxy in front of `upstream` that forwards each request whole (one per connection,
/// `Connection: close`) and records its request line.
fn recording_proxy(upstream: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let req = read_head(&mut client);
            let head = String::from_utf8_lossy(&req).into_owned();
            let mut lines: Vec<&str> = head
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .collect();
            log.lock().unwrap().push(lines[0].to_string());
            lines.retain(|l| !l.is_empty());
            let head = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
            let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            up.write_all(head.as_bytes()).unwrap();
            // Orthanc keeps the connection alive whatever the request says: the answer's
            // head says close instead, and its Content-Length bytes are passed on.
            let resp = read_head(&mut up);
            let end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(resp.len(), |i| i + 4);
            let head = String::from_utf8_lossy(&resp[..end]).into_owned();
            let mut length = None;
            let mut out = String::new();
            for line in head.split("\r\n").filter(|l| !l.is_empty()) {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
                    continue;
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse::<u64>().ok();
                }
                out += line;
                out += "\r\n";
            }
            out += "Connection: close\r\n\r\n";
            let _ = client.write_all(out.as_bytes());
            let _ = client.write_all(&resp[end..]);
            let already = (resp.len() - end) as u64;
            match length {
                Some(n) => {
                    let _ =
                        std::io::copy(&mut (&mut up).take(n.saturating_sub(already)), &mut client);
                }
                None => {
                    let _ = std::io::copy(&mut up, &mut client);
                }
            }
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    });
    (port, seen)
}

/// `--transfer-syntax UID` asks WADO-RS for the instances in that syntax (Orthanc
/// transcodes the colour JPEG cine to explicit VR little endian) where by default they come
/// as stored; a syntax that is not a UID is refused before any request.
#[test]
fn retrieve_in_a_chosen_transfer_syntax() {
    let orthanc = Orthanc::start();
    let file = data("examples_ybr_color.dcm");
    orthanc.upload(&file);
    let m = meta(&file);
    let url = format!(
        "{}/studies/{}/series/{}",
        orthanc.root(),
        m.study_instance_uid,
        m.series_instance_uid
    );
    let syntaxes = |extra: &[&str]| {
        let mut args = vec!["info", url.as_str(), "--json"];
        args.extend_from_slice(extra);
        let (ok, out, err, _) = medfm_auth(&args);
        assert!(ok, "{args:?}: {err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        j["series"][0]["transfer_syntaxes"].clone()
    };
    assert_ne!(m.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_eq!(syntaxes(&[]), serde_json::json!([m.transfer_syntax]));
    assert_eq!(
        syntaxes(&["--transfer-syntax", "1.2.840.10008.1.2.1"]),
        serde_json::json!(["1.2.840.10008.1.2.1"])
    );
    let (ok, _, err, code) = medfm_auth(&["info", &url, "--transfer-syntax", "jpeg"]);
    assert!(
        !ok && code == 2 && err.contains("not a UID"),
        "{code}: {err}"
    );
}

/// `convert INSTANCE_URL --frame N --out x.png` retrieves that frame only (WADO-RS
/// metadata + frames) and draws the PNG of the local file's frame N: native, JPEG 12-bit
/// (the frame in its stored compression), an enhanced MR (the frame's functional group:
/// its own window), an RT dose (its GridFrameOffsetVector entry), colour JPEG ultrasound,
/// and single frames whose modality LUT and palette come as bulk data by reference.
#[test]
fn frames_of_an_instance_alone() {
    let orthanc = Orthanc::start();
    let cases = [
        ("emri_small.dcm", 7u32),
        ("decode/emri_small_jpeg12.dcm", 3),
        ("lut/emri_enhanced.dcm", 4),
        ("decode/rtdose.dcm", 9),
        ("examples_ybr_color.dcm", 17),
        // Single frames whose LUTs Orthanc gives by BulkDataURI (read from it).
        ("lut/ct_modality_lut.dcm", 0),
        ("lut/palette_segmented.dcm", 0),
        ("lut/mr_voi_lut.dcm", 0),
    ];
    let (proxy, seen) = recording_proxy(orthanc.http);
    for (name, frame) in cases {
        let file = data(name);
        orthanc.upload(&file);
        let m = meta(&file);
        let instance = format!(
            "http://127.0.0.1:{proxy}/dicom-web/studies/{}/series/{}/instances/{}",
            m.study_instance_uid, m.series_instance_uid, m.sop_instance_uid
        );
        let (a, b) = (tmp("frame-remote.png"), tmp("frame-local.png"));
        seen.lock().unwrap().clear();
        let f = frame.to_string();
        let (ok, _, err, _) = medfm_auth(&["convert", &instance, "--frame", &f, "--out", &a]);
        assert!(ok, "{name}: {err}");
        let asked = seen.lock().unwrap().clone();
        let paths: Vec<&str> = asked
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap_or(""))
            .collect();
        let prefix = format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            m.study_instance_uid, m.series_instance_uid, m.sop_instance_uid
        );
        assert_eq!(
            paths[..2],
            [
                format!("{prefix}/metadata"),
                format!("{prefix}/frames/{}", frame + 1)
            ],
            "{name}: the metadata and the one frame"
        );
        assert!(
            paths[2..]
                .iter()
                .all(|p| p.starts_with(&format!("{prefix}/bulk/"))),
            "{name}: then only bulk data of that instance: {paths:?}"
        );
        if name.contains("lut/ct") || name.contains("palette") {
            assert!(
                paths.len() > 2,
                "{name}: its LUT data by reference: {paths:?}"
            );
        }
        let (ok, _, err, _) = medfm_auth(&[
            "convert",
            &file.display().to_string(),
            "--frame",
            &f,
            "--out",
            &b,
        ]);
        assert!(ok, "{name}: {err}");
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{name}: frame {frame} from the server draws as the local file's"
        );
        // A frame the instance does not have: the range, in --frame's terms.
        let (ok, _, err, code) = medfm_auth(&["convert", &instance, "--frame", "999", "--out", &a]);
        assert!(
            !ok && err.contains("--frame 999") && err.contains("has frames 0.."),
            "{name}: {err}"
        );
        assert_eq!(code, 2);
        std::fs::remove_file(&a).ok();
        std::fs::remove_file(&b).ok();
    }
}
