//! `medfm node` attacked the way a peer on its network could (issue 34), each finding
//! reproduced against a node started here on 127.0.0.1 and held: endless command
//! fragments, slow-byte associations on every slot while a real `storescu` must get
//! through, hundreds of connections over the limit, a deflate bomb over C-STORE and in the
//! watch folder, a malformed file meta group in the watch folder, an unreadable outbox
//! record. Each asserts the node's memory and threads stay bounded, the legitimate peer is
//! served, the bad item is recorded with its reason and `/api/health` tells the truth.
//! Every attack is bounded in count and time.

mod common;
#[path = "common/scu.rs"]
mod scu;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::node::*;
use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use medfm::dimse;

/// Resident memory the node may gain under one attack (KiB): far below what each finding
/// took before it was bounded (663 MB for the fragments, 2.14 GB for two deflate bombs).
const MAX_GROWTH_KB: u64 = 150 * 1024;

/// The watch folder of the node `Node::start(name, ..)` makes.
fn inbox_of(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("medfm-node-{}-{name}", std::process::id()))
        .join("inbox")
}

fn health(node: &Node) -> (u16, serde_json::Value) {
    let (status, body) = node.api("GET", "/api/health", "");
    (status, serde_json::from_slice(&body).unwrap())
}

fn echo_ok(node: &Node) {
    let out = node.echoscu(CALLING, "MEDFM");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn endless_command_fragments_are_cut_in_bounded_memory() {
    let node = Node::start("fragments", "");
    let (_, base) = node.memory_kb();
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title(CALLING)
        .called_ae_title("MEDFM")
        .with_presentation_context(dimse::VERIFICATION, vec!["1.2.840.10008.1.2"])
        .establish(format!("127.0.0.1:{}", node.port))
        .unwrap();
    let context = a.presentation_contexts()[0].id;
    // Up to 256 MiB of command fragments, none the last; the node must cut it long before.
    let fragment = vec![0u8; 60_000];
    let mut sent = 0usize;
    let cut = (0..4_400).any(|_| {
        let r = a.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: false,
                data: fragment.clone(),
            }],
        });
        sent += fragment.len();
        r.is_err()
    });
    assert!(cut, "the node took {sent} bytes of one command set");
    // What the socket buffers held when the node aborted, at most.
    assert!(sent < 32 << 20, "{sent} bytes sent before the cut");
    let (peak, _) = node.memory_kb();
    assert!(peak < base + MAX_GROWTH_KB, "{base} KiB -> {peak} KiB peak");
    wait_for(10, "the log line", || {
        node.log().contains("command set over 65536 bytes")
    });
    echo_ok(&node);
}

/// One byte of an A-ASSOCIATE-RQ every 400 ms on each slot; `storescu` retried until it
/// stores, as a modality retries a transient rejection.
#[test]
fn slow_peers_on_every_slot_and_hundreds_over_the_limit() {
    let node = Node::start(
        "slow",
        "max_associations = 2\nassociation_timeout_seconds = 3\n",
    );
    let port = node.port;
    let trickle = || {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let t = Instant::now();
            // A PDU type 1 header announcing 1000 bytes, then one byte at a time.
            let mut bytes = vec![1u8, 0, 0, 0, 0x03, 0xE8];
            bytes.extend(std::iter::repeat_n(0u8, 1000));
            for b in bytes {
                if s.write_all(&[b]).is_err() {
                    return t.elapsed();
                }
                std::thread::sleep(Duration::from_millis(400));
                // The node closing its side shows as a read of 0 bytes.
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 64];
                let closed = !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                if closed {
                    return t.elapsed();
                }
            }
            t.elapsed()
        })
    };
    let slow = [trickle(), trickle()];
    std::thread::sleep(Duration::from_millis(500));

    // Both slots are held: 300 connections over the limit are each refused with an
    // A-ASSOCIATE-RJ, and the node's threads stay few.
    let threads_before = node.threads();
    let mut over: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let threads = node.threads();
    assert!(
        threads <= threads_before + 4,
        "{threads_before} threads -> {threads} with 300 connections over the limit"
    );
    let mut rejected = 0;
    for s in over.iter_mut().take(20) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut pdu = [0u8; 10];
        if s.read_exact(&mut pdu).is_ok() && pdu[0] == 0x03 {
            rejected += 1;
        }
    }
    assert!(rejected >= 10, "{rejected} of 20 read an A-ASSOCIATE-RJ");
    drop(over);

    // The modality gets through once the trickling peers are cut at their deadline.
    let files = brain_files(2, "1.2.826.0.1.3680043.9.7781", &node.dir);
    let t = Instant::now();
    let stored = loop {
        let out = node.storescu(CALLING, &files);
        if out.status.success() {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "storescu kept out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for h in slow {
        let held = h.join().unwrap();
        assert!(
            held < Duration::from_secs(8),
            "a trickling peer held its slot {held:?}"
        );
    }
    eprintln!("storescu stored after {stored:?} with both slots trickled");
    assert!(node.log().contains("past its deadline"), "{}", node.log());
    assert_eq!(spool_files(&node.spool()).len(), 2);
}

/// A deflated data set of `inflated` bytes (mostly one zero-filled value): an explicit VR
/// little endian secondary capture, deflated.
fn deflate_bomb(inflated: u64, uid: &str) -> Vec<u8> {
    let el = |out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], value: &[u8]| {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(&v);
    };
    let mut head = Vec::new();
    el(&mut head, 0x0008, 0x0016, b"UI", SC.as_bytes());
    el(&mut head, 0x0008, 0x0018, b"UI", uid.as_bytes());
    el(
        &mut head,
        0x0020,
        0x000D,
        b"UI",
        format!("{uid}.1").as_bytes(),
    );
    el(
        &mut head,
        0x0020,
        0x000E,
        b"UI",
        format!("{uid}.2").as_bytes(),
    );
    let n = inflated - head.len() as u64 - 12;
    head.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]);
    head.extend_from_slice(&(n as u32).to_le_bytes());
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        z.write_all(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    z.finish().unwrap()
}

const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

#[test]
fn deflate_bombs_are_refused_in_bounded_memory() {
    let node = Node::start(
        "deflate",
        &format!(
            "max_instance_mb = 16\nmemory_budget_mb = 64\ninbox = \"{}\"\n",
            inbox_of("deflate").display()
        ),
    );
    let (_, base) = node.memory_kb();
    // 600 MB inflated from about 600 KB, twice at once.
    let bombs: Vec<(String, Vec<u8>)> = [
        "1.2.826.0.1.3680043.9.7782.1",
        "1.2.826.0.1.3680043.9.7782.2",
    ]
    .iter()
    .map(|u| (u.to_string(), deflate_bomb(600 << 20, u)))
    .collect();
    assert!(bombs[0].1.len() < 2 << 20, "{} bytes", bombs[0].1.len());
    let replies: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = bombs
            .iter()
            .map(|(uid, data)| {
                s.spawn(|| scu::raw_store(node.port, CALLING, SC, uid, DEFLATED, data))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, comment) in &replies {
        assert_ne!(*status, 0, "a deflate bomb was stored");
        assert!(comment.contains("inflates past"), "{status:04X} {comment}");
    }
    let (peak, _) = node.memory_kb();
    assert!(peak < base + MAX_GROWTH_KB, "{base} KiB -> {peak} KiB peak");
    assert!(spool_files(&node.spool()).is_empty());

    // The same bomb as a file in the watch folder: rejected with its reason.
    let mut file = medfm_part10(SC, &bombs[0].0, DEFLATED);
    file.extend_from_slice(&bombs[0].1);
    let inbox = node.dir.join("inbox");
    std::fs::write(inbox.join("bomb.dcm"), &file).unwrap();
    let reason = node.dir.join("rejected/bomb.dcm.reason.txt");
    wait_for(20, "the bomb's rejection", || reason.exists());
    let text = std::fs::read_to_string(&reason).unwrap();
    assert!(text.contains("inflates past"), "{text}");
    let (peak, _) = node.memory_kb();
    assert!(peak < base + MAX_GROWTH_KB, "{base} KiB -> {peak} KiB peak");
    assert_eq!(health(&node).0, 200);
    echo_ok(&node);
}

/// Preamble and a file meta group as DCMTK writes it.
fn medfm_part10(class: &str, instance: &str, ts: &str) -> Vec<u8> {
    let mut group = Vec::new();
    let mut el = |element: u16, vr: &[u8; 2], value: &[u8]| {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        group.extend_from_slice(&2u16.to_le_bytes());
        group.extend_from_slice(&element.to_le_bytes());
        group.extend_from_slice(vr);
        if vr == b"OB" {
            group.extend_from_slice(&[0, 0]);
            group.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            group.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        group.extend_from_slice(&v);
    };
    el(0x0001, b"OB", &[0, 1]);
    el(0x0002, b"UI", class.as_bytes());
    el(0x0003, b"UI", instance.as_bytes());
    el(0x0010, b"UI", ts.as_bytes());
    el(0x0012, b"UI", b"1.2.826.0.1.3680043.9.7783");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

/// Where group 0002 of a Part 10 file ends (walked here, independently of the node).
fn group_end(b: &[u8]) -> usize {
    let mut pos = 144;
    while b[pos..pos + 2] == [2, 0] {
        let long = matches!(&b[pos + 4..pos + 6], b"OB" | b"OW" | b"UN" | b"UT");
        pos += if long {
            12 + u32::from_le_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize
        } else {
            8 + u16::from_le_bytes([b[pos + 6], b[pos + 7]]) as usize
        };
    }
    pos
}

/// A file whose group length ends inside the header of its last meta element, an OB:
/// dicom-object reads it (the element whole), so it entered the spool, and the outbox,
/// reading only the group's bytes, indexed past them: the work thread panicked, and did
/// again after every restart. Now the outbox reads group 0002 whole and forwards the data
/// set as it is; an unreadable outbox record is parked and stops no send; `/api/health`
/// says ok throughout.
#[test]
fn a_malformed_meta_group_and_a_broken_record_stop_nothing() {
    let scp_port = free_port();
    let received = std::env::temp_dir().join(format!("medfm-attack-scp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&received);
    std::fs::create_dir_all(&received).unwrap();
    let scp = StoreScp::start(&received, scp_port);
    let node = Node::start(
        "meta",
        &format!(
            "inbox = \"{}\"\nseries_idle_seconds = 1\nretry_seconds = 1\n\
             [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {scp_port}\n\
             [[rule]]\njobs = [\"forward\"]\n",
            inbox_of("meta").display()
        ),
    );
    let files = brain_files(2, "1.2.826.0.1.3680043.9.7784", &node.dir);
    let inbox = node.dir.join("inbox");
    // (0002,0102) OB of 4 bytes appended to the group; the group length ends 2 bytes
    // before that element's header does.
    let source = std::fs::read(&files[0]).unwrap();
    let end = group_end(&source);
    let mut bad = source[..end].to_vec();
    bad.extend_from_slice(&[2, 0, 2, 1, b'O', b'B', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
    bad.extend_from_slice(&source[end..]);
    let length = (end + 10 - 144) as u32;
    bad[140..144].copy_from_slice(&length.to_le_bytes());
    std::fs::write(inbox.join("bad.dcm"), &bad).unwrap();
    std::fs::copy(&files[1], inbox.join("good.dcm")).unwrap();

    // A broken record in the outbox: parked with its reason.
    let outbox = node.spool().join(".node/outbox");
    std::fs::write(outbox.join("0000-broken.json"), b"{ not json").unwrap();

    wait_for(60, "both files forwarded", || scp.received().len() == 2);
    let parked = node.spool().join(".node/parked/0000-broken.json");
    wait_for(20, "the broken record parked", || parked.exists());
    // The data set went out from where group 0002 ends (storescp rewrites what it
    // receives, so the first element and the decoded pixels are compared): from the
    // group length's end it would start inside an element and not parse.
    let uid = "1.2.826.0.1.3680043.9.7784.1";
    let got = std::fs::read(&scp.received()[uid]).unwrap();
    assert_eq!(data_set(&got)[..8], source[end..end + 8]);
    let pixels = |b: &[u8]| medfm::dicom::read(b).unwrap().frame(0).unwrap().values;
    assert!(pixels(&got) == pixels(&bad), "the forwarded pixels differ");
    let (status, h) = health(&node);
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["work"]["step"].is_string(), "{h}");
    assert!(h["last_errors"].to_string().contains("0000-broken"), "{h}");
    drop(scp);
    let _ = std::fs::remove_dir_all(&received);
}

/// One raw HTTP request (bytes as given): the status, or None when the node closed the
/// connection without one.
fn raw_http(port: u16, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if s.write_all(request).is_err() {
        // The node may close while a large request is still being written.
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    head.split(' ').nth(1).and_then(|c| c.parse().ok())
}

/// 300 idle connections and a 200 MiB header line: threads and memory stay bounded and a
/// legitimate request is answered at once. Another site's requests: a foreign Host (DNS
/// rebinding) is refused, so is a cross-origin POST and a text/plain one (a CORS "simple
/// request"), before anything runs.
#[test]
fn http_holds_idle_connections_huge_heads_and_other_sites() {
    let node = Node::start("http", "");
    let port = node.http;
    let (_, base) = node.memory_kb();
    let threads_before = node.threads();
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let threads = node.threads();
    assert!(
        threads <= threads_before + 2,
        "{threads_before} threads -> {threads} with 300 idle HTTP connections"
    );
    let t = Instant::now();
    let (status, _) = http(port, "GET", "/api/health", "", None);
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // A header line of 200 MiB, sent while the node reads: refused (431) or cut, in
    // bounded memory.
    let huge = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..200 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let sent = huge.join().unwrap();
    assert!(sent < 64 << 20, "the node read {sent} bytes of one header");
    let (peak, _) = node.memory_kb();
    assert!(peak < base + MAX_GROWTH_KB, "{base} KiB -> {peak} KiB peak");
    drop(idle);

    let request = |host: &str, extra: &str, method: &str, body: &str| {
        format!(
            "{method} /api/segment HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let body = r#"{"series": "1.2.3", "instance": "1.2.3.4", "box": [1, 1, 9, 9]}"#;
    let foreign = request(
        "evil.example:8181",
        "Content-Type: application/json\r\n",
        "POST",
        body,
    );
    assert_eq!(raw_http(port, foreign.as_bytes()), Some(403));
    let get =
        "GET /dicomweb/studies HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(port, get.as_bytes()), Some(403));
    let cross = request(
        "127.0.0.1",
        "Origin: http://evil.example\r\nContent-Type: application/json\r\n",
        "POST",
        body,
    );
    assert_eq!(raw_http(port, cross.as_bytes()), Some(403));
    let simple = request("127.0.0.1", "Content-Type: text/plain\r\n", "POST", body);
    assert_eq!(raw_http(port, simple.as_bytes()), Some(415));
    // The same request from the node's own origin reaches the handler (404: no such
    // instance in the spool), and its error names no file.
    let own = request(
        &format!("localhost:{port}"),
        &format!(
            "Origin: http://localhost:{port}\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\n",
            node.token()
        ),
        "POST",
        body,
    );
    assert_eq!(raw_http(port, own.as_bytes()), Some(404));
    let log = node.log();
    assert!(
        log.contains("the Host header does not name this node"),
        "{log}"
    );
    assert!(!log.contains("segmented"), "{log}");
    assert_eq!(health(&node).0, 200);
}

/// A step of the work thread that hangs (a send to a destination that accepts the
/// connection and never answers) turns `/api/health` to 503 "work thread stuck" past
/// `work_stuck_seconds`, naming the step; once the send gives up (its timeout) the health
/// is 200 again and the send is recorded as failed.
#[test]
fn health_says_when_the_work_thread_is_stuck() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let node = Node::start(
        "stuck",
        &format!(
            "work_stuck_seconds = 1\nassociation_timeout_seconds = 6\nseries_idle_seconds = 1\n\
             retry_seconds = 600\n[[destination]]\nname = \"mute\"\nae_title = \"MUTE\"\n\
             host = \"127.0.0.1\"\nport = {port}\n[[rule]]\njobs = [\"forward\"]\n"
        ),
    );
    node.send_ok(&brain_files(1, "1.2.826.0.1.3680043.9.7785", &node.dir));
    let mut stuck = None;
    wait_for(20, "a 503 while the send hangs", || {
        let (status, h) = health(&node);
        if status == 503 {
            stuck = Some(h);
        }
        status == 503
    });
    let h = stuck.unwrap();
    assert_eq!(h["status"], "work thread stuck", "{h}");
    assert!(h["work"]["step"].as_str().unwrap().contains("mute"), "{h}");
    wait_for(20, "the health back to 200", || health(&node).0 == 200);
    assert!(
        health(&node).1["last_errors"].to_string().contains("mute"),
        "the failed send is recorded"
    );
    drop(silent);
}
