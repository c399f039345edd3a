//! `medfm node` against real DICOM peers: DCMTK's `echoscu` and `storescu` (Debian package
//! dcmtk) as the modality, the node started here on 127.0.0.1 with its own spool. Echo;
//! fixture instances of many transfer syntaxes and SOP classes over 4 concurrent
//! associations, stored byte for byte; refusals (calling and called AE title, abstract
//! syntax, corrupt data set, a UID that is a path, quota, association limit), each with its
//! status and log line and nothing written; 20+ `kill -9` while storescu sends, after which
//! every acknowledged instance is in the spool whole; SIGTERM drains and exits 0.

mod common;
#[path = "common/scu.rs"]
mod scu;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::node::*;
use common::*;
use dicom_ul::ClientAssociationOptions;
use medfm::dicom::identify;
use medfm::dimse;

/// A C-STORE in explicit VR little endian from the minimal SCU of tests/common/scu.rs.
fn raw_store(port: u16, sop_class: &str, sop_instance: &str, data: &[u8]) -> (u16, String) {
    scu::raw_store(
        port,
        CALLING,
        sop_class,
        sop_instance,
        "1.2.840.10008.1.2.1",
        data,
    )
}

#[test]
fn echo_store_over_four_associations_and_refusals() {
    let node = Node::start("main", "");
    // C-ECHO from an allowed AE; refusals of a calling and a called AE title.
    let out = node.echoscu(CALLING, "MEDFM");
    assert!(
        out.status.success(),
        "echoscu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.echoscu("INTRUDER", "MEDFM");
    assert!(
        !out.status.success(),
        "an unknown calling AE must be rejected"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("Calling AE Title Not Recognized"), "{err}");
    let out = node.echoscu(CALLING, "NOT_MEDFM");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Called AE Title Not Recognized"));
    let log = node.log();
    assert!(
        log.contains("calling AE title not allowed") && log.contains("INTRUDER"),
        "{log}"
    );
    assert!(log.contains("called AE title is not this node's"), "{log}");

    // The fixtures over 4 concurrent associations.
    let files = as_dcmtk_writes(&fixtures(), &node.dir.join("sent"));
    let parts: Vec<Vec<PathBuf>> = (0..4)
        .map(|i| files.iter().skip(i).step_by(4).cloned().collect())
        .collect();
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .map(|p| s.spawn(|| node.storescu(CALLING, p)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "storescu: {text}");
        assert!(
            !text.contains("Store Response (Error") && !text.contains("Failed"),
            "{text}"
        );
    }
    let log = node.log();
    assert!(log.matches("association accepted").count() >= 5, "{log}");
    let mut same_syntax = 0;
    for f in &files {
        let original = std::fs::read(f).unwrap();
        let ids = identify(&original).unwrap();
        let path = spooled(&node, &ids);
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} not in the spool ({e}): {log}", f.display()));
        let back = identify(&stored).unwrap();
        assert_eq!(
            (
                &back.sop_class_uid,
                &back.study_instance_uid,
                &back.series_instance_uid
            ),
            (
                &ids.sop_class_uid,
                &ids.study_instance_uid,
                &ids.series_instance_uid
            )
        );
        if back.transfer_syntax == ids.transfer_syntax {
            // Sent in its own transfer syntax: the data set is kept byte for byte (the
            // inflated bytes for deflate).
            assert!(
                content(&stored) == content(&original),
                "{} changed",
                f.display()
            );
            same_syntax += 1;
        }
        if let Ok(image) = medfm::dicom::read(&original)
            && let Ok(a) = image.frame(0)
        {
            let b = medfm::dicom::read(&stored).unwrap().frame(0).unwrap();
            assert_eq!(a.values, b.values, "{} decodes differently", f.display());
        }
    }
    assert!(
        same_syntax >= files.len() - 3,
        "only {same_syntax} kept their transfer syntax"
    );
    let count = spool_files(&node.spool()).len();
    assert_eq!(count, files.len());

    // The same instances again: acknowledged, stored once.
    let out = node.storescu(CALLING, &parts[0]);
    assert!(out.status.success());
    assert_eq!(spool_files(&node.spool()).len(), count);
    assert!(node.log().contains("duplicate, already in the spool"));

    // A data set whose StudyInstanceUID is a path: refused (C000), nothing written.
    let dir = node.dir.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let brain = data("series/brain11/brain_005.dcm");
    let evil = edited(&brain, |o| {
        o.put_str(
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
            dicom_core::VR::UI,
            "../../../../escaped",
        );
        o.put_str(
            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.826.0.1.3680043.9.7777.1",
        );
        o.meta_mut().media_storage_sop_instance_uid = "1.2.826.0.1.3680043.9.7777.1".into();
    });
    let no_series = edited(&brain, |o| {
        o.remove_element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
        o.put_str(
            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.826.0.1.3680043.9.7777.2",
        );
        o.meta_mut().media_storage_sop_instance_uid = "1.2.826.0.1.3680043.9.7777.2".into();
    });
    for (name, bytes, needle) in [
        ("evil.dcm", &evil, "StudyInstanceUID"),
        ("noseries.dcm", &no_series, "SeriesInstanceUID"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = node.storescu(CALLING, &[p]);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            text.contains("Store Response (Error: CannotUnderstand)"),
            "{name}: {text}"
        );
        let log = node.log();
        assert!(
            log.contains("C-STORE refused") && log.contains(needle),
            "{log}"
        );
    }
    assert_eq!(spool_files(&node.spool()).len(), count);
    assert!(!node.dir.join("escaped").exists() && !Path::new("/escaped").exists());

    // A data set cut short (DCMTK would not send it): C000 with the parser's reason.
    let original = std::fs::read(&brain).unwrap();
    let ids = identify(&original).unwrap();
    let ds = data_set(&original);
    let (code, comment) = raw_store(
        node.port,
        &ids.sop_class_uid,
        "1.2.826.0.1.3680043.9.7777.3",
        &ds[..ds.len() / 2],
    );
    assert_eq!(code, dimse::status::CANNOT_UNDERSTAND, "{comment}");
    // A data set of another SOP instance than its command: A900.
    let (code, comment) = raw_store(
        node.port,
        &ids.sop_class_uid,
        "1.2.826.0.1.3680043.9.7777.4",
        ds,
    );
    assert_eq!(code, dimse::status::DATA_SET_MISMATCH, "{comment}");
    assert!(comment.contains("SOPInstanceUID"), "{comment}");
    assert_eq!(spool_files(&node.spool()).len(), count);

    // An abstract syntax that is not storage (Patient Root Q/R FIND): refused.
    let refused = ClientAssociationOptions::new()
        .calling_ae_title(CALLING)
        .called_ae_title("MEDFM")
        .with_presentation_context("1.2.840.10008.5.1.4.1.2.1.1", vec!["1.2.840.10008.1.2"])
        .establish(format!("127.0.0.1:{}", node.port));
    assert!(refused.is_err(), "a Q/R context must not be accepted");
    // (The node logs it after its answer is on the wire.)
    wait_for(10, "the refusal's log line", || {
        node.log().contains("presentation context refused")
    });
    assert!(
        std::fs::read_dir(node.spool().join(".tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn quota_and_association_limit() {
    // 1 MiB: the first brain slices (133 KB each) fit, the rest are refused with A700.
    let node = Node::start("quota", "quota_mb = 1\nmax_associations = 1\n");
    let files = brain();
    let out = node.storescu(CALLING, &files);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        text.contains("Store Response (Refused: OutOfResources)"),
        "{text}"
    );
    let stored = spool_files(&node.spool());
    let bytes: u64 = stored
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        !stored.is_empty() && bytes <= 1 << 20,
        "{} files, {bytes} bytes",
        stored.len()
    );
    assert!(node.log().contains("quota"), "{}", node.log());
    // Nothing was sent, so nothing may be evicted.
    assert!(!node.log().contains("evicted"), "{}", node.log());
    for p in &stored {
        identify(&std::fs::read(p).unwrap()).unwrap();
    }

    // One association at a time: a second one is rejected (transient) while one is open.
    let held = ClientAssociationOptions::new()
        .calling_ae_title(CALLING)
        .called_ae_title("MEDFM")
        .with_presentation_context(dimse::VERIFICATION, vec!["1.2.840.10008.1.2"])
        .establish(format!("127.0.0.1:{}", node.port))
        .unwrap();
    let out = node.echoscu(CALLING, "MEDFM");
    assert!(
        !out.status.success(),
        "a second association must be rejected"
    );
    assert!(node.log().contains("max_associations reached"));
    drop(held);
}

#[test]
fn kill_dash_nine_loses_no_acknowledged_instance() {
    // A forward rule to DCMTK's storescp: the series' jobs and sends pending at each kill
    // must all complete after the last restart.
    let pacs_port = free_port();
    let mut node = Node::start(
        "crash",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 100\n\
             [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
             [[rule]]\njobs = [\"forward\"]\n"
        ),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    // 126 distinct instances made from the brain slices (new SOP instance UIDs): 120 sent
    // while the node is killed, 6 after.
    let files = brain_instances(126, "1.2.826.0.1.3680043.9.7778", &node.dir);
    let mut acked: Vec<PathBuf> = Vec::new();
    let mut kills = 0;
    let mut rng = 0x2545F491u32;
    let mut next = |m: u32| {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng % m
    };
    let mut round = 0;
    while kills < 24 {
        // storescu sends a batch of 6 in one association, in the background; the node is
        // killed at a random moment 20-200 ms after storescu starts (before, during or after its association).
        let batch: Vec<PathBuf> = (0..6)
            .map(|k| files[(round * 6 + k) % 120].clone())
            .collect();
        round += 1;
        let child = node
            .storescu_cmd(CALLING, &batch)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + next(180) as u64));
        node.kill9();
        kills += 1;
        let out = child.wait_with_output().unwrap();
        acked.extend(acknowledged(&out, &batch));
        node.spawn();
    }
    // A last batch without a kill: the node works after all the crashes.
    let tail: Vec<PathBuf> = files[120..].to_vec();
    let out = node.storescu(CALLING, &tail);
    assert_eq!(
        acknowledged(&out, &tail),
        tail,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    acked.extend(tail);
    acked.sort();
    acked.dedup();
    for f in &acked {
        let original = std::fs::read(f).unwrap();
        let ids = identify(&original).unwrap();
        let stored = std::fs::read(spooled(&node, &ids))
            .unwrap_or_else(|e| panic!("acknowledged {} lost ({e})", f.display()));
        assert!(
            data_set(&stored) == data_set(&original),
            "{} differs",
            f.display()
        );
    }
    // Nothing in the spool is a partial file: every final name parses whole.
    for p in spool_files(&node.spool()) {
        identify(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    assert_eq!(node.starts, kills + 1);
    eprintln!(
        "{kills} kills, {} acknowledged instances, {} in the spool",
        acked.len(),
        spool_files(&node.spool()).len()
    );
    // Every pending job and send completes: each instance of the spool reaches the PACS.
    let in_spool = spool_files(&node.spool()).len();
    wait_for(120, "every stored instance at the PACS", || {
        pacs.received().len() == in_spool
    });

    // SIGTERM: drains and exits 0 with its counts.
    let status = node.terminate();
    assert!(status.success(), "{status}: {}", node.log());
    assert!(node.log().contains("medfm node stopped"));
}

#[test]
fn a_thousand_instances_over_four_associations_in_flat_memory() {
    let node = Node::start("load", "");
    let files = brain_files(1000, "1.2.826.0.1.3680043.9.7780", &node.dir);
    // Warm-up: 200 instances, then the peak resident memory is noted; 800 more must not
    // raise it by what they weigh (800 x 133 KB = 106 MB would show a leak).
    let send = |part: &[PathBuf]| {
        let chunks: Vec<Vec<PathBuf>> = (0..4)
            .map(|i| part.iter().skip(i).step_by(4).cloned().collect())
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| s.spawn(|| node.storescu(CALLING, c)))
                .collect();
            for h in handles {
                let out = h.join().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
    };
    let t = std::time::Instant::now();
    send(&files[..200]);
    let (warm_peak, _) = node.memory_kb();
    send(&files[200..]);
    let secs = t.elapsed().as_secs_f64();
    let (peak, now) = node.memory_kb();
    let stored = spool_files(&node.spool()).len();
    eprintln!(
        "1000 instances (133 KB) over 4 associations: {stored} stored in {secs:.1} s; \
         node memory: peak {} MiB after 200, peak {} MiB after 1000, now {} MiB",
        warm_peak / 1024,
        peak / 1024,
        now / 1024
    );
    assert_eq!(stored, 1000);
    assert!(
        peak < warm_peak + 48 * 1024,
        "memory grew with the count: {warm_peak} KiB -> {peak} KiB"
    );
}

#[test]
fn print_config_and_bad_configs() {
    let (ok, out, err) = medfm(&["node", "--print-config"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("ae_title = \"MEDFM\"") && out.contains("port = 11112"),
        "{out}"
    );
    let dir = std::env::temp_dir().join(format!("medfm-node-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nmodality = \"MR\"\njobs = [\"forward\"]\n").unwrap();
    expect_error(
        &["node", "--config", bad.to_str().unwrap()],
        "forward needs a [[destination]]",
    );
    for timeout in ["0", "-1.5", "nan", "inf"] {
        std::fs::write(&bad, format!("model_timeout_seconds = {timeout}\n")).unwrap();
        expect_error(
            &["node", "--config", bad.to_str().unwrap()],
            "model_timeout_seconds: more than 0",
        );
    }
    std::fs::write(&bad, "aetitle = \"X\"\n").unwrap();
    expect_error(
        &["node", "--config", bad.to_str().unwrap()],
        "unknown field",
    );
    let missing = dir.join("missing.toml");
    expect_error(
        &["node", "--config", missing.to_str().unwrap()],
        "cannot read",
    );
    // The exit codes of their kinds (the one error type): a wrong configuration is bad
    // input (2), as is a certificate file that is not one; a file that can't be read, 5.
    let code = |config: &Path| {
        std::process::Command::new(medfm_exe())
            .args(["node", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&bad), Some(2));
    assert_eq!(code(&missing), Some(5));
    std::fs::write(
        &bad,
        format!(
            "dicom_tls_cert = \"{0}\"\ndicom_tls_key = \"{0}\"\nspool = \"{1}\"\n",
            data("MR_small.dcm").display(),
            dir.join("spool").display()
        ),
    )
    .unwrap();
    expect_error(
        &["node", "--config", bad.to_str().unwrap()],
        "dicom_tls_cert",
    );
    assert_eq!(code(&bad), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
    // A port in use: a clear error, no panic.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = std::env::temp_dir().join(format!("medfm-node-port-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "bind = \"127.0.0.1\"\nport = {port}\nspool = \"{}\"\n",
            std::env::temp_dir()
                .join(format!("medfm-node-port-{}", std::process::id()))
                .display()
        ),
    )
    .unwrap();
    expect_error(
        &["node", "--config", cfg.to_str().unwrap()],
        "cannot listen",
    );
    assert_eq!(
        code(&cfg),
        Some(5),
        "a port in use is an input/output error"
    );
    drop(taken);
    let _ = std::fs::remove_file(&cfg);
}
