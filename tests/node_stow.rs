//! The edge node's STOW-RS destinations (`dicomweb` in a `[[destination]]`) against a real
//! DICOMweb server: Debian's Orthanc with its DICOMweb plugin and basic auth. A completed
//! MR series is forwarded by STOW-RS and the SEG its rule makes goes there too: Orthanc
//! holds every instance with the data set the modality sent, and the SEG as the node
//! stored it. A destination with wrong credentials keeps its send in the outbox, retried,
//! then parked with the server's refusal; nothing of it reaches the server.

mod common;
#[path = "common/orthanc.rs"]
mod orthanc;

use common::node::*;
use common::*;
use medfm::dicom::identify;
use orthanc::*;

#[test]
fn series_and_segs_go_to_a_dicomweb_destination_by_stow_rs() {
    let pacs = Orthanc::start();
    let root = pacs.root();
    let node = Node::start(
        "stow",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 2\n\
             [[destination]]\nname = \"web\"\ndicomweb = \"{root}\"\ndicomweb_user = \"{USER}:{PASSWORD}\"\n\
             [[destination]]\nname = \"locked\"\ndicomweb = \"{root}\"\ndicomweb_user = \"{USER}:wrong\"\n\
             [[rule]]\nname = \"brain\"\nmodality = \"MR\"\njobs = [\"forward\", \"segment\"]\nsend_to = [\"web\"]\n\
             [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\n\
             [[rule]]\nname = \"ct\"\nmodality = \"CT\"\njobs = [\"forward\"]\nsend_to = [\"locked\"]\n"
        ),
    );
    // The printed configuration never shows the credentials.
    let (ok, printed, err) = medfm(&[
        "node",
        "--print-config",
        "--config",
        node.dir.join("node.toml").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        !printed.contains(PASSWORD) && !printed.contains(":wrong") && printed.contains("(set)"),
        "{printed}"
    );

    let brain = brain();
    let mut files = as_dcmtk_writes(&brain, &node.dir.join("sent"));
    let ct = as_dcmtk_writes(&[data("CT_small.dcm")], &node.dir.join("sent-ct"));
    files.extend(ct.clone());
    node.send_ok(&files);

    // The series, with the data sets the modality sent.
    let uid = |f: &std::path::PathBuf| identify(&std::fs::read(f).unwrap()).unwrap();
    wait_for(120, "the MR series in Orthanc", || {
        files[..brain.len()]
            .iter()
            .all(|f| pacs.file_of(&uid(f).sop_instance_uid).is_some())
    });
    for f in &files[..brain.len()] {
        let stored = pacs.file_of(&uid(f).sop_instance_uid).unwrap();
        assert!(
            content(&stored) == content(&std::fs::read(f).unwrap()),
            "{} changed on the way",
            f.display()
        );
    }
    // The SEG of the rule: the one file of the spool that was not sent to the node.
    let sent: Vec<std::ffi::OsString> = files
        .iter()
        .map(|f| format!("{}.dcm", uid(f).sop_instance_uid).into())
        .collect();
    let made = || {
        spool_files(&node.spool())
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| !sent.iter().any(|s| s == n)))
    };
    wait_for(300, "the SEG in the spool", || made().is_some());
    let seg = made().unwrap();
    let seg_bytes = std::fs::read(&seg).unwrap();
    let seg_ids = identify(&seg_bytes).unwrap();
    assert_eq!(seg_ids.modality, "SEG");
    wait_for(60, "the SEG in Orthanc", || {
        pacs.file_of(&seg_ids.sop_instance_uid).is_some()
    });
    assert!(content(&pacs.file_of(&seg_ids.sop_instance_uid).unwrap()) == content(&seg_bytes));

    // Wrong credentials: retried, then parked with the server's answer; the CT never
    // reaches the server.
    let parked = || -> Vec<serde_json::Value> {
        std::fs::read_dir(node.spool().join(".node/parked"))
            .map(|d| {
                d.filter_map(|e| {
                    let p = e.ok()?.path();
                    (p.extension()? == "json")
                        .then(|| serde_json::from_slice(&std::fs::read(&p).ok()?).ok())?
                })
                .collect()
            })
            .unwrap_or_default()
    };
    wait_for(120, "the send to the locked destination parked", || {
        !parked().is_empty()
    });
    let records = parked();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["destination"], "locked", "{record}");
    assert_eq!(record["attempts"], 2, "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("STOW-RS to locked") && error.contains("401"),
        "{error}"
    );
    assert!(
        !error.contains("wrong"),
        "the error shows the credentials: {error}"
    );
    assert!(pacs.file_of(&uid(&ct[0]).sop_instance_uid).is_none());
    // Everything for the good destination left the outbox.
    let outbox = std::fs::read_dir(node.spool().join(".node/outbox"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(outbox, 0, "{}", node.log());
}
