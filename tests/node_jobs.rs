//! The edge node's rules, jobs and outbox against real peers: DCMTK's `storescu` as the
//! modality and `storescp` as the PACS. A `forward` rule sends a completed MR series to
//! the PACS byte for byte and leaves a CT series that matches no rule alone; a PACS that
//! is down gets the series once it is up (retries from the persistent outbox), through 8
//! `kill -9` of the node in the middle of its sending (the PACS takes a second per
//! instance, so every kill lands inside a send). A `segment` rule sends the PACS the SEG
//! that `medfm segment` gives for the same prompt on the series' middle slice. An `embed`
//! rule fills the node's index, which `medfm search` finds each slice in. A job waiting
//! for its retry runs its own rule after the rules were reordered. The watch folder
//! imports complete files (not a file still being written) and rejects the rest with
//! the reason. A full spool makes room by removing the oldest study that was sent.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::node::*;
use common::*;
use medfm::dicom::identify;

fn forward_config(pacs_port: u16) -> String {
    format!(
        "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 100\n\
         [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
         [[rule]]\nmodality = \"MR\"\njobs = [\"forward\"]\n\
         [[rule]]\nmodality = \"CT\"\nseries_description = \"nothing like*\"\njobs = [\"forward\"]\n"
    )
}

fn outbox_len(node: &Node) -> usize {
    std::fs::read_dir(node.spool().join(".node/outbox"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_completed_series_is_forwarded_byte_for_byte() {
    let pacs_port = free_port();
    let node = Node::start("forward", &forward_config(pacs_port));
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let brain = brain();
    let mut files = as_dcmtk_writes(&brain, &node.dir.join("sent"));
    let ct = as_dcmtk_writes(&[data("CT_small.dcm")], &node.dir.join("sent-ct"));
    files.extend(ct.clone());
    node.send_ok(&files);

    wait_for(60, "the MR series at the PACS", || {
        pacs.received().len() >= brain.len()
    });
    wait_for(30, "an empty outbox", || outbox_len(&node) == 0);
    let received = pacs.received();
    assert_eq!(
        received.len(),
        brain.len(),
        "only the MR series is forwarded"
    );
    pacs.assert_holds(&files[..brain.len()]);
    let ct_uid = identify(&std::fs::read(&ct[0]).unwrap())
        .unwrap()
        .sop_instance_uid;
    assert!(!received.contains_key(&ct_uid));
    let log = node.log();
    assert!(
        log.contains("series complete") && log.contains("jobs=1") && log.contains("jobs=0"),
        "{log}"
    );
    assert!(
        log.contains("sent") && log.contains("destination=\"pacs\""),
        "{log}"
    );
}

#[test]
fn the_outbox_survives_a_pacs_that_is_down_and_kill_dash_nine() {
    let pacs_port = free_port();
    let mut node = Node::start("outbox", &forward_config(pacs_port));
    let files = brain_instances(12, "1.2.826.0.1.3680043.9.7779", &node.dir);
    node.send_ok(&files);
    // The PACS is down: the send fails and waits for its retry.
    wait_for(30, "a failed send", || {
        node.log().contains("send failed; will retry")
    });
    assert_eq!(outbox_len(&node), 1);
    node.kill9();
    node.spawn();
    assert!(
        node.log().contains("resuming") && node.log().contains("outbox=1"),
        "{}",
        node.log()
    );

    // The PACS comes up, slow (a second after each instance); the node is killed 8 times
    // while it sends, each time after the PACS got something new or a few seconds.
    let pacs = StoreScp::start_with(&node.dir.join("pacs"), pacs_port, &["--sleep-after", "1"]);
    let mut during = Vec::new();
    for _ in 0..8 {
        let before = pacs.received().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pacs.received().len() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        during.push(pacs.received().len());
        node.kill9();
        node.spawn();
    }
    eprintln!("instances at the PACS at each kill: {during:?}");
    assert!(
        during.iter().any(|n| *n > 0 && *n < files.len()),
        "no kill landed inside a send: {during:?}"
    );
    wait_for(120, "every instance at the PACS", || {
        pacs.received().len() >= files.len()
    });
    wait_for(30, "an empty outbox", || outbox_len(&node) == 0);
    pacs.assert_holds(&files);
    assert_eq!(node.starts, 10);
    eprintln!(
        "sends logged: {}, failures: {}",
        node.log().matches("INFO medfm::node::work: sent").count(),
        node.log().matches("send failed").count()
    );
}

#[test]
fn a_segment_rule_sends_the_seg_of_the_middle_slice() {
    let pacs_port = free_port();
    let node = Node::start(
        "segment",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\n\
             [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n\
             [[rule]]\nmodality = \"MR\"\njobs = [\"segment\"]\n\
             [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\npropagate = true\nextent = 1\n"
        ),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let brain = brain();
    node.send_ok(&brain);
    wait_for(300, "the SEG at the PACS", || !pacs.received().is_empty());
    let received = pacs.received();
    assert_eq!(received.len(), 1, "only the SEG is sent (no forward rule)");
    let seg = std::fs::read(received.values().next().unwrap()).unwrap();
    let ids = identify(&seg).unwrap();
    assert_eq!(ids.sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
    assert_eq!(ids.modality, "SEG");
    // The SEG is in the spool too, as a series of the study.
    assert!(spooled(&node, &ids).exists());

    // The same prompt given to `medfm segment` by hand: the same masks.
    let images: Vec<_> = brain
        .iter()
        .map(|p| medfm::dicom::read(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let refs: Vec<_> = images.iter().collect();
    let order = medfm::dicom::series::order(&refs).unwrap().order;
    let (i, frame) = order[order.len() / 2];
    let (c, r) = (
        images[i].meta.cols as f32 - 1.0,
        images[i].meta.rows as f32 - 1.0,
    );
    // The node's input: the instances as they arrived in its spool (storescu re-encodes
    // what it sends: padding of empty values can differ from the files it read).
    let input = spooled(
        &node,
        &identify(&std::fs::read(&brain[i]).unwrap()).unwrap(),
    );
    let prompts = node.dir.join("prompts.json");
    std::fs::write(
        &prompts,
        serde_json::json!({"segments": [{
            "label": "Brain", "slice": input, "frame": frame, "propagate": true, "extent": 1,
            "box": [0.18 * c, 0.23 * r, 0.84 * c, 0.94 * r],
        }]})
        .to_string(),
    )
    .unwrap();
    let by_hand = node.dir.join("by_hand.dcm");
    let (ok, _, err) = medfm(&[
        "segment",
        "--segments",
        prompts.to_str().unwrap(),
        "--out",
        by_hand.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // The same job in the node (in process) and by hand: the same file, byte for byte (its
    // UIDs and dates come from its content, never the clock), so a rerun is recognised.
    // The node's own file is the one in its spool; the PACS's copy is the same instance
    // (DCMTK re-encodes what it receives, so not the same bytes).
    let by_hand_bytes = std::fs::read(&by_hand).unwrap();
    let node_bytes = std::fs::read(spooled(&node, &ids)).unwrap();
    if node_bytes != by_hand_bytes {
        let kept = std::env::temp_dir().join("medfm-node-seg-differs.dcm");
        std::fs::write(&kept, &node_bytes).unwrap();
        panic!(
            "the node's SEG ({}) differs from medfm segment's ({})",
            kept.display(),
            by_hand.display()
        );
    }
    let by_hand_ids = identify(&by_hand_bytes).unwrap();
    assert_eq!(
        (&ids.sop_instance_uid, &ids.series_instance_uid),
        (
            &by_hand_ids.sop_instance_uid,
            &by_hand_ids.series_instance_uid
        )
    );
    let a = medfm::dicom::read(&seg).unwrap();
    let b = medfm::dicom::read(&by_hand_bytes).unwrap();
    assert_eq!(a.meta.frames, b.meta.frames);
    assert_eq!(a.meta.frames, 3, "the middle slice and one each way");
    let mut masks = Vec::new();
    for k in 0..a.meta.frames {
        let (fa, fb) = (a.frame(k).unwrap(), b.frame(k).unwrap());
        assert_eq!(fa.values, fb.values, "frame {k}");
        masks.extend(fa.values.iter().map(|v| *v as u8));
    }
    assert!(
        masks.iter().filter(|m| **m != 0).count() > 10_000,
        "a brain-sized mask"
    );
    // highdicom reads it: frames in series order (the middle slice and its neighbours),
    // label, the palette's first colour.
    let mid = order.len() / 2;
    let sources: Vec<_> = (mid - 1..=mid + 1)
        .map(|k| serde_json::json!([images[order[k].0].meta.sop_instance_uid, null]))
        .collect();
    check_seg_segments(
        "node-seg",
        &seg,
        &masks,
        256,
        256,
        Some(serde_json::json!(sources)),
        Some(serde_json::json!([{"label": "Brain", "color": medfm::dicom::seg::PALETTE[0]}])),
    );
    let log = node.log();
    assert!(
        log.contains("segmented") && log.contains("label=\"Brain\""),
        "{log}"
    );
}

/// A model that panics on one series (the configuration's test hook): that job fails with
/// the panic recorded (retried, then parked), and the node goes on: `/api/health` answers
/// with the error, instances are still stored, and the model runs again on another
/// series (reloaded after the panic).
#[test]
fn a_panicking_model_fails_its_job_and_the_node_goes_on() {
    let brain = brain();
    let series = identify(&std::fs::read(&brain[0]).unwrap())
        .unwrap()
        .series_instance_uid;
    let node = Node::start(
        "panic",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 2\n\
             test_panic_series = [\"{series}\"]\n\
             [[rule]]\nmodality = \"MR\"\njobs = [\"segment\"]\n\
             [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\n"
        ),
    );
    node.send_ok(&brain);
    wait_for(120, "the job parked", || {
        std::fs::read_dir(node.spool().join(".node/parked")).is_ok_and(|mut d| d.next().is_some())
    });
    let log = node.log();
    assert!(log.contains("the model panicked"), "{log}");
    let parked = std::fs::read_dir(node.spool().join(".node/parked"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&parked).unwrap()).unwrap();
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("the model panicked"),
        "{record}"
    );
    assert_eq!(record["attempts"], 2, "{record}");
    // Still serving: health, a C-STORE, and the model on another series.
    let (status, body) = node.api("GET", "/api/health", "");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{health}");
    assert!(
        health.to_string().contains("the model panicked"),
        "{health}"
    );
    let ct = data("CT_small.dcm");
    node.send_ok(std::slice::from_ref(&ct));
    let ids = identify(&std::fs::read(&ct).unwrap()).unwrap();
    let request = serde_json::json!({
        "series": ids.series_instance_uid, "instance": ids.sop_instance_uid,
        "box": [30, 30, 100, 100],
    });
    let (status, body) = node.api("POST", "/api/segment", &request.to_string());
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("seg_sop_instance_uid"), "{text}");
}

/// A model run past `model_timeout_seconds` stops between slices and fails, naming the
/// limit: a rule's propagation and its embedding are parked after one attempt, an API
/// propagation gets 503; a run of one slice is never cut, and the node goes on. (The
/// limit, 1 ms, is far below one encoder pass on any CPU.)
#[test]
fn a_model_run_past_its_timeout_stops_and_the_node_goes_on() {
    let node = Node::start(
        "timeout",
        "series_idle_seconds = 1\nmax_attempts = 1\nmodel_timeout_seconds = 0.001\ndevice = \"cpu\"\n\
         [[rule]]\nmodality = \"MR\"\njobs = [\"segment\", \"embed\"]\n\
         [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\npropagate = true\n",
    );
    let brain = brain();
    node.send_ok(&brain);
    // The parked records (not a record's temporary file, a hidden name).
    let parked = || -> Vec<std::path::PathBuf> {
        let Ok(dir) = std::fs::read_dir(node.spool().join(".node/parked")) else {
            return Vec::new();
        };
        dir.map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect()
    };
    wait_for(300, "both jobs parked", || parked().len() == 2);
    // Each stopped early: after fewer slices than the series has.
    for path in parked() {
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let error = record["error"].as_str().unwrap();
        let want = "the model run passed model_timeout_seconds (0.001 s) and was stopped after ";
        let slices: usize = error
            .split_once(want)
            .and_then(|(_, rest)| rest.strip_suffix(" slice(s)"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{record}"));
        assert!((1..brain.len()).contains(&slices), "{record}");
    }
    let log = node.log();
    assert!(
        !log.contains("segmented") && !log.contains("embedded"),
        "{log}"
    );

    // The API: a propagation is stopped (503, the limit named); one slice is not cut.
    let ids = identify(&std::fs::read(&brain[5]).unwrap()).unwrap();
    let request = serde_json::json!({
        "series": ids.series_instance_uid, "instance": ids.sop_instance_uid,
        "box": [45, 60, 215, 240], "propagate": true,
    });
    let (status, body) = node.api("POST", "/api/segment", &request.to_string());
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("model_timeout_seconds"), "{text}");
    let request = serde_json::json!({
        "series": ids.series_instance_uid, "instance": ids.sop_instance_uid,
        "box": [45, 60, 215, 240],
    });
    let (status, body) = node.api("POST", "/api/segment", &request.to_string());
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("seg_sop_instance_uid"), "{text}");
    let (status, body) = node.api("GET", "/api/health", "");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{health}");
    assert!(
        health.to_string().contains("model_timeout_seconds"),
        "{health}"
    );
}

/// Rules reordered (and one added in front) while a job waits for its retry: the job
/// records its rule's name, not its place, so after the restart it runs its own rule (the
/// SEG reaches the PACS), and the forward job that had completed does not run again.
#[test]
fn a_waiting_job_runs_its_rule_after_the_rules_are_reordered() {
    let brain = brain();
    let series = identify(&std::fs::read(&brain[0]).unwrap())
        .unwrap()
        .series_instance_uid;
    let pacs_port = free_port();
    let destination = format!(
        "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n"
    );
    let segment = "[[rule]]\nname = \"brain\"\nmodality = \"MR\"\njobs = [\"segment\"]\n\
                   [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.18, 0.23, 0.84, 0.94]\n";
    let forward = "[[rule]]\nname = \"archive\"\nmodality = \"MR\"\njobs = [\"forward\"]\n";
    let settings = "series_idle_seconds = 1\nretry_seconds = 4\nmax_attempts = 100\n";
    let mut node = Node::start(
        "reorder",
        &format!("{settings}test_panic_series = [\"{series}\"]\n{destination}{segment}{forward}"),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    node.send_ok(&brain);
    wait_for(120, "the segment job failed once", || {
        node.log().contains("the model panicked")
    });
    wait_for(60, "the forwarded series at the PACS", || {
        pacs.received().len() >= brain.len()
    });
    node.kill9();
    let before = node.log();
    assert_eq!(before.matches("forward queued").count(), 1, "{before}");

    // The new configuration: another rule first, the two swapped, no panic hook.
    let config = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    let head = &config[..config.find("series_idle_seconds").unwrap()];
    let other = "[[rule]]\nname = \"ct\"\nmodality = \"CT\"\njobs = [\"forward\"]\n";
    std::fs::write(
        node.dir.join("node.toml"),
        format!("{head}{settings}{destination}{other}{forward}{segment}"),
    )
    .unwrap();
    node.spawn();
    wait_for(300, "the SEG at the PACS", || {
        pacs.received().len() > brain.len()
    });
    wait_for(30, "an empty outbox", || outbox_len(&node) == 0);
    let received = pacs.received();
    assert_eq!(received.len(), brain.len() + 1, "the series and one SEG");
    let segs = received
        .values()
        .filter(|p| identify(&std::fs::read(p).unwrap()).unwrap().modality == "SEG")
        .count();
    assert_eq!(segs, 1);
    let after = &node.log()[before.len()..];
    assert!(after.contains("segmented"), "{after}");
    assert!(
        !after.contains("forward queued") && !after.contains("no longer in the configuration"),
        "{after}"
    );
}

#[test]
fn an_embed_rule_fills_the_index_search_reads() {
    let node = Node::start(
        "embed",
        "series_idle_seconds = 1\n[[rule]]\nmodality = \"MR\"\njobs = [\"embed\"]\n",
    );
    let brain = brain();
    node.send_ok(&brain);
    let index = node.spool().join(".node/index");
    wait_for(300, "the series in the index", || {
        node.log().contains("embedded") || node.log().contains("job failed")
    });
    assert!(node.log().contains("vectors=11"), "{}", node.log());
    for query in [&brain[2], &brain[7]] {
        let (ok, stdout, err) = medfm(&[
            "search",
            index.to_str().unwrap(),
            query.to_str().unwrap(),
            "-k",
            "1",
            "--json",
        ]);
        assert!(ok, "{err}");
        let hits: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let want = identify(&std::fs::read(query).unwrap())
            .unwrap()
            .sop_instance_uid;
        assert_eq!(hits[0]["entry"]["instance_uid"], want.as_str(), "{stdout}");
        assert!(hits[0]["score"].as_f64().unwrap() > 0.999, "{stdout}");
    }
    // The same over HTTP.
    let want = identify(&std::fs::read(&brain[4]).unwrap())
        .unwrap()
        .sop_instance_uid;
    let (status, body) = node.api("GET", &format!("/api/search?instance={want}&k=2"), "");
    let hits: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits[0]["entry"]["instance_uid"], want.as_str(), "{hits}");
    assert_eq!(hits.as_array().unwrap().len(), 2);
    assert_eq!(node.api("GET", "/api/search?instance=1.2.3", "").0, 404);
    assert_eq!(node.api("GET", "/api/search", "").0, 400);
    // A folder without an index: a clear error.
    expect_error(
        &[
            "search",
            node.dir.to_str().unwrap(),
            brain[0].to_str().unwrap(),
        ],
        "holds no index",
    );
}

#[test]
fn the_watch_folder_imports_complete_files_and_rejects_the_rest() {
    let base = std::env::temp_dir().join(format!("medfm-inbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (inbox, rejected) = (base.join("inbox"), base.join("rejected"));
    let node = Node::start("inbox", &format!("inbox = \"{}\"\n", inbox.display()));
    let brain = brain();
    // Ten slices copied in (one in a sub-folder), one written slowly in two halves.
    std::fs::create_dir_all(inbox.join("sub")).unwrap();
    for (i, f) in brain[..10].iter().enumerate() {
        let to = if i == 0 {
            inbox.join("sub/a.dcm")
        } else {
            inbox.join(format!("{i}.dcm"))
        };
        std::fs::copy(f, to).unwrap();
    }
    let slow = std::fs::read(&brain[10]).unwrap();
    let slow_path = inbox.join("slow.dcm");
    std::fs::write(&slow_path, &slow[..slow.len() / 2]).unwrap();
    // Refused: not DICOM, cut short, a UID that is a path.
    std::fs::write(inbox.join("notes.txt"), b"not an image").unwrap();
    let whole = std::fs::read(&brain[0]).unwrap();
    std::fs::write(inbox.join("cut.dcm"), &whole[..whole.len() - 5000]).unwrap();
    let evil = edited(&brain[0], |o| {
        o.put_str(
            dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
            dicom_core::VR::UI,
            "../../x",
        );
    });
    std::fs::write(inbox.join("evil.dcm"), evil).unwrap();
    // Partial upload names are left alone.
    std::fs::write(inbox.join(".part.dcm"), &whole).unwrap();

    std::thread::sleep(Duration::from_millis(1200));
    // The slow file is not taken half written.
    assert!(slow_path.exists(), "taken before it was complete");
    std::fs::write(&slow_path, &slow).unwrap();
    wait_for(30, "the 11 slices in the spool", || {
        spool_files(&node.spool()).len() == 11
    });
    wait_for(30, "the 3 refusals", || {
        std::fs::read_dir(&rejected).map(|d| d.count()).unwrap_or(0) == 6
    });
    for f in &brain {
        let ids = identify(&std::fs::read(f).unwrap()).unwrap();
        let stored = std::fs::read(spooled(&node, &ids)).unwrap();
        assert!(
            stored == std::fs::read(f).unwrap(),
            "{} changed",
            f.display()
        );
    }
    for (name, needle) in [
        ("notes.txt", "not a DICOM file"),
        ("cut.dcm", ""),
        ("evil.dcm", "SeriesInstanceUID"),
    ] {
        assert!(rejected.join(name).exists(), "{name} not rejected");
        let reason = std::fs::read_to_string(rejected.join(format!("{name}.reason.txt"))).unwrap();
        assert!(
            reason.contains(needle) && !reason.trim().is_empty(),
            "{name}: {reason}"
        );
    }
    assert!(inbox.join(".part.dcm").exists());
    let left: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}"); // sub/ (now empty) and .part.dcm
    assert!(node.log().contains("inbox: imported") && node.log().contains("inbox: rejected"));
    let _ = std::fs::remove_dir_all(&base);
}

/// The brain slices as a study of their own: new study, series and instance UIDs.
fn brain_study(k: u32, dir: &std::path::Path) -> Vec<PathBuf> {
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    let out = dir.join(format!("study{k}"));
    std::fs::create_dir_all(&out).unwrap();
    brain()
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let root = format!("1.2.826.0.1.3680043.9.7781.{k}");
            let sop = format!("{root}.3.{}", i + 1);
            let bytes = edited(&f, |o| {
                o.put_str(
                    tags::STUDY_INSTANCE_UID,
                    VR::UI,
                    format!("{root}.1").as_str(),
                );
                o.put_str(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    format!("{root}.2").as_str(),
                );
                o.put_str(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str());
                o.meta_mut().media_storage_sop_instance_uid = sop.clone();
            });
            let p = out.join(format!("{i}.dcm"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

#[test]
fn a_full_spool_evicts_the_oldest_sent_study_only() {
    let pacs_port = free_port();
    // 3 MiB: two studies of 1.4 MB fit, a third does not.
    let node = Node::start(
        "evict",
        &format!("quota_mb = 3\n{}", forward_config(pacs_port)),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let studies: Vec<Vec<PathBuf>> = (1..=3).map(|k| brain_study(k, &node.dir)).collect();
    let study_dir = |k: u32| {
        node.spool()
            .join(format!("1.2.826.0.1.3680043.9.7781.{k}.1"))
    };
    for (k, files) in studies.iter().take(2).enumerate() {
        node.send_ok(files);
        wait_for(60, "the study at the PACS", || {
            pacs.received().len() == 11 * (k + 1)
        });
        wait_for(30, "an empty outbox", || outbox_len(&node) == 0);
        std::thread::sleep(Duration::from_millis(1100)); // distinct ages
    }
    let out = node.storescu(CALLING, &studies[2]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!text.contains("OutOfResources"), "{text}");
    assert!(!study_dir(1).exists(), "the oldest sent study makes room");
    assert!(study_dir(2).exists() && study_dir(3).exists());
    assert_eq!(spool_files(&node.spool()).len(), 22);
    assert!(node.log().contains("evicted"), "{}", node.log());
}

/// A study whose MR series the rules forward and whose OT series no rule sends (issue 34,
/// item 5: "sent" was per study, so the OT series went with it): under the quota the
/// delivered series makes room and the other is kept whole.
#[test]
fn eviction_keeps_every_series_never_delivered() {
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    let pacs_port = free_port();
    let node = Node::start(
        "evict-series",
        &format!("quota_mb = 3\n{}", forward_config(pacs_port)),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let mixed = brain_study(4, &node.dir);
    let root = "1.2.826.0.1.3680043.9.7781.4";
    let other: Vec<PathBuf> = mixed
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let bytes = edited(f, |o| {
                o.put_str(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    format!("{root}.5").as_str(),
                );
                o.put_str(tags::MODALITY, VR::CS, "OT");
                let sop = format!("{root}.6.{}", i + 1);
                o.put_str(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str());
                o.meta_mut().media_storage_sop_instance_uid = sop;
            });
            let p = node.dir.join(format!("ot-{i}.dcm"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    node.send_ok(&mixed);
    node.send_ok(&other);
    wait_for(60, "the MR series at the PACS", || {
        pacs.received().len() == 11
    });
    wait_for(30, "an empty outbox", || outbox_len(&node) == 0);
    std::thread::sleep(Duration::from_millis(1100));
    let (mr, ot) = (
        node.spool().join(format!("{root}.1/{root}.2")),
        node.spool().join(format!("{root}.1/{root}.5")),
    );
    assert!(mr.exists() && ot.exists());
    // 1.4 MB more does not fit in 3 MiB beside 2.8 MB: the delivered series makes room.
    let out = node.storescu(CALLING, &brain_study(5, &node.dir));
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!text.contains("OutOfResources"), "{text}");
    assert!(!mr.exists(), "the delivered series makes room");
    assert_eq!(
        spool_files(&ot).len(),
        11,
        "the series never sent is kept whole"
    );
    assert!(node.log().contains("evicted"), "{}", node.log());
}
