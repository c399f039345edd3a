//! The edge node's rules, jobs and outbox against real peers: DCMTK's `storescu` as the
//! modality and `storescp` as the PACS. A `forward` rule sends a completed MR series to
//! the PACS byte for byte and leaves a CT series that matches no rule alone; a PACS that
//! is down gets the series once it is up (retries from the persistent outbox), through 8
//! `kill -9` of the node in the middle of its sending (the PACS takes a second per
//! instance, so every kill lands inside a send). A `segment` rule sends the PACS the SEG
//! that `medfm segment` gives for the same prompt on the series' middle slice. An `embed`
//! rule fills the node's index, which `medfm search` finds each slice in.

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
    let brain: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("brain"))
        .collect();
    let mut files = as_dcmtk_writes(&brain, &node.dir.join("sent"));
    let ct = as_dcmtk_writes(&[data("CT_small.dcm")], &node.dir.join("sent-ct"));
    files.extend(ct.clone());
    let out = node.storescu(CALLING, &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
    for f in &files[..brain.len()] {
        let sent = std::fs::read(f).unwrap();
        let uid = identify(&sent).unwrap().sop_instance_uid;
        let at_pacs = std::fs::read(&received[&uid]).unwrap();
        assert!(
            content(&at_pacs) == content(&sent),
            "{} changed on the way",
            f.display()
        );
    }
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
    let out = node.storescu(CALLING, &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let received = pacs.received();
    for f in &files {
        let sent = std::fs::read(f).unwrap();
        let uid = identify(&sent).unwrap().sop_instance_uid;
        let at_pacs = std::fs::read(&received[&uid]).unwrap();
        assert!(
            content(&at_pacs) == content(&sent),
            "{} changed on the way",
            f.display()
        );
    }
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
    let brain: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("brain"))
        .collect();
    let out = node.storescu(CALLING, &brain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let prompts = node.dir.join("prompts.json");
    std::fs::write(
        &prompts,
        serde_json::json!({"segments": [{
            "label": "Brain", "slice": brain[i], "frame": frame, "propagate": true, "extent": 1,
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
    let a = medfm::dicom::read(&seg).unwrap();
    let b = medfm::dicom::read(&std::fs::read(&by_hand).unwrap()).unwrap();
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

#[test]
fn an_embed_rule_fills_the_index_search_reads() {
    let node = Node::start(
        "embed",
        "series_idle_seconds = 1\n[[rule]]\nmodality = \"MR\"\njobs = [\"embed\"]\n",
    );
    let brain: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("brain"))
        .collect();
    let out = node.storescu(CALLING, &brain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
