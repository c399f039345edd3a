//! The edge node's HTTP API with real clients: status and studies; `POST /api/segment` on a
//! stored series returning a SEG that dciodvfy accepts and highdicom reads, sent to DCMTK's
//! storescp; bad requests with their statuses; the spool as DICOMweb read by
//! `dicomweb-client` (Python) and by `medfm query`/`medfm info`; the token when set.

mod common;

use common::node::*;
use common::*;
use medfm::dicom::identify;
use serde_json::{Value, json};

fn get_json(node: &Node, path: &str) -> Value {
    let (status, body) = node.api("GET", path, "");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn status_studies_segment_and_dicomweb() {
    let pacs_port = free_port();
    let node = Node::start(
        "http",
        &format!(
            "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n"
        ),
    );
    let pacs = StoreScp::start(&node.dir.join("pacs"), pacs_port);
    let brain = brain();
    node.send_ok(&brain);

    let health = get_json(&node, "/api/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["received"]["stored"], 11, "{health}");
    // The DICOM listener's loop passes (at least every 100 ms while it waits).
    let listener = &health["dicom_listener"];
    assert!(listener["since_pass_s"].as_u64().unwrap() <= 2, "{health}");
    assert_eq!(listener["ended"], false, "{health}");
    assert!(
        health["disk"]["spool_bytes"].as_u64().unwrap() > 11 * 130_000,
        "{health}"
    );
    assert!(
        health["disk"]["free_bytes"].as_u64().unwrap() > 0,
        "{health}"
    );

    let ids = identify(&std::fs::read(&brain[5]).unwrap()).unwrap();
    let studies = get_json(&node, "/api/studies");
    assert_eq!(
        studies[0]["study"],
        ids.study_instance_uid.as_str(),
        "{studies}"
    );
    assert_eq!(studies[0]["series"][0]["instances"], 11, "{studies}");

    // Segment on request: the SEG comes back by UID, is in the spool and at the PACS.
    let request = json!({
        "series": ids.series_instance_uid, "instance": ids.sop_instance_uid, "frame": 0,
        "box": [45, 60, 215, 240], "label": "Brain", "send_to": "pacs",
    });
    let (status, body) = node.api("POST", "/api/segment", &request.to_string());
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["send"]["status"], "sent", "{reply}");
    let seg_uid = reply["seg_sop_instance_uid"].as_str().unwrap().to_string();
    let received = pacs.received();
    let seg = std::fs::read(&received[&seg_uid]).unwrap();
    // The same prompt through `medfm segment`: the same mask.
    let by_hand = node.dir.join("by_hand.png");
    let (ok, _, err) = medfm(&[
        "segment",
        brain[5].to_str().unwrap(),
        "--box",
        "45,60,215,240",
        "--out",
        by_hand.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let png = image_png(&by_hand);
    let mask: Vec<u8> = png.iter().map(|v| u8::from(*v > 0)).collect();
    check_seg_segments(
        "node-http-seg",
        &seg,
        &mask,
        256,
        256,
        Some(json!([[ids.sop_instance_uid, null]])),
        Some(json!([{"label": "Brain", "color": medfm::dicom::seg::PALETTE[0]}])),
    );

    // Bad requests: their statuses, and the node goes on.
    for (body, want, needle) in [
        ("{", 400, "the request"),
        (
            &json!({"series": ids.series_instance_uid, "instance": ids.sop_instance_uid, "box": [1, 1, 9, 9], "colour": [1, 2, 3]}).to_string(),
            400,
            "unknown field `colour`",
        ),
        (
            &json!({"series": ids.series_instance_uid, "instance": ids.sop_instance_uid}).to_string(),
            400,
            "and/or",
        ),
        (r#"{"series": "1.2", "instance": "1.3", "box": [1, 2, 3, 4]}"#, 404, "no instance"),
        (r#"{"series": "../..", "instance": "1.3"}"#, 400, "must be UIDs"),
        (
            &json!({"series": ids.series_instance_uid, "instance": ids.sop_instance_uid, "box": [10, 10, 900, 900]}).to_string(),
            400,
            "box",
        ),
        (
            &json!({"series": ids.series_instance_uid, "instance": ids.sop_instance_uid, "box": [1, 1, 9, 9], "send_to": "nas"}).to_string(),
            400,
            "not a [[destination]]",
        ),
    ] {
        let (status, reply) = node.api("POST", "/api/segment", body);
        let text = String::from_utf8_lossy(&reply).to_string();
        assert_eq!(status, want, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    assert_eq!(node.api("GET", "/api/nothing", "").0, 404);
    assert_eq!(node.api("DELETE", "/api/health", "").0, 405);

    // DICOMweb: dicomweb-client searches and retrieves; medfm's own client too.
    let root = format!("http://127.0.0.1:{}/dicomweb", node.http);
    let script = r#"
import sys, json
from dicomweb_client.api import DICOMwebClient
c = DICOMwebClient(url=sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[4]})
studies = c.search_for_studies()
study = studies[0]['0020000D']['Value'][0]
series = c.search_for_series(study_instance_uid=study)
uids = sorted(s['0020000E']['Value'][0] for s in series)
out = {'studies': len(studies), 'series': uids, 'instances': {}}
for s in uids:
    inst = c.search_for_instances(study_instance_uid=study, series_instance_uid=s)
    out['instances'][s] = sorted(i['00080018']['Value'][0] for i in inst)
sop = sys.argv[3]
ds = c.retrieve_instance(study_instance_uid=study, series_instance_uid=sys.argv[2], sop_instance_uid=sop)
out['retrieved'] = ds.SOPInstanceUID
out['rows'] = int(ds.Rows)
out['series_retrieved'] = len(c.retrieve_series(study_instance_uid=study, series_instance_uid=sys.argv[2]))
print(json.dumps(out))
"#;
    let run = std::process::Command::new(check_python())
        .args([
            "-c",
            script,
            &root,
            &ids.series_instance_uid,
            &ids.sop_instance_uid,
            &node.token(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "dicomweb-client: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["studies"], 1);
    assert_eq!(
        got["series"].as_array().unwrap().len(),
        2,
        "the MR series and the SEG: {got}"
    );
    assert_eq!(
        got["instances"][&ids.series_instance_uid]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    assert_eq!(got["retrieved"], ids.sop_instance_uid.as_str());
    assert_eq!(got["rows"], 256);
    assert_eq!(got["series_retrieved"], 11);

    let token = node.token();
    let (ok, stdout, err) = medfm(&["query", &root, "--token", &token]);
    assert!(ok, "{err}");
    assert!(stdout.contains(&ids.study_instance_uid), "{stdout}");
    let series_url = format!(
        "{root}/studies/{}/series/{}",
        ids.study_instance_uid, ids.series_instance_uid
    );
    let (ok, stdout, err) = medfm(&["info", &series_url, "--token", &token]);
    assert!(ok, "{err}");
    assert!(stdout.contains("MR") && stdout.contains("11"), "{stdout}");
    // A UID that is a path: refused.
    assert_eq!(
        node.api("GET", "/dicomweb/studies/..%2F../series", "").0,
        404
    );
    assert_eq!(node.api("GET", "/dicomweb/studies/1.2.3.4.5", "").0, 404);
}

/// The grey values of an 8-bit PNG.
fn image_png(path: &std::path::Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

/// Every request but the health needs the token: the configured one, or, without one
/// (the default), the node's own, generated at its first start into a 0600 file, kept
/// across restarts and shown by `medfm node --print-token` (issue 34: no token on
/// loopback let any local process, or page, use the API).
#[test]
fn a_token_guards_the_api() {
    let node = Node::start("token", "http_token = \"s3cret-t0ken\"\n");
    assert_eq!(http(node.http, "GET", "/api/health", "", None).0, 200);
    for token in [None, Some("wrong")] {
        assert_eq!(http(node.http, "GET", "/api/studies", "", token).0, 401);
    }
    assert_eq!(
        http(node.http, "GET", "/api/studies", "", Some("s3cret-t0ken")).0,
        200
    );
    assert_eq!(node.token(), "s3cret-t0ken");
    assert_eq!(http(node.http, "GET", "/dicomweb/studies", "", None).0, 401);
    assert!(node.log().contains("a valid token is needed"));

    let mut own = Node::start("own-token", "");
    let token = own.token();
    assert_eq!(token.len(), 64, "{token}");
    assert_eq!(http(own.http, "GET", "/api/studies", "", None).0, 401);
    assert_eq!(
        http(own.http, "GET", "/api/studies", "", Some(&token)).0,
        200
    );
    let file = own.spool().join(".node/http_token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    own.kill9();
    own.spawn();
    assert_eq!(own.token(), token, "the token survives a restart");
    assert_eq!(
        http(own.http, "GET", "/api/studies", "", Some(&token)).0,
        200
    );
}

#[test]
fn the_web_app_is_served_from_web_root() {
    let web = std::env::temp_dir().join(format!("medfm-web-{}", std::process::id()));
    std::fs::create_dir_all(web.join("www")).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>medfm</title>",
    )
    .unwrap();
    std::fs::write(web.join("www/app.js"), "export const x = 1;").unwrap();
    std::fs::write(web.join("medfm_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(web.join(".secret"), "no").unwrap();
    let node = Node::start("web", &format!("web_root = \"{}\"\n", web.display()));
    let (status, body) = http(node.http, "GET", "/", "", None);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"<!doctype html><title>medfm</title>"[..])
    );
    let (status, body) = http(node.http, "GET", "/www/app.js", "", None);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"export const x = 1;"[..])
    );
    assert_eq!(http(node.http, "GET", "/medfm_bg.wasm", "", None).0, 200);
    for bad in [
        "/.secret",
        "/../node.toml",
        "/www/..%2F..%2Fnode.toml",
        "/missing.js",
    ] {
        assert_eq!(http(node.http, "GET", bad, "", None).0, 404, "{bad}");
    }
    // Streamed with byte ranges (a browser resuming the 11 MB weights, a media element).
    let ranged = |range: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http)).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET /medfm_bg.wasm HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nRange: {range}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut out).unwrap();
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            String::from_utf8_lossy(&out[..end]).to_ascii_lowercase(),
            out[end..].to_vec(),
        )
    };
    let (head, body) = ranged("bytes=2-5");
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(head.contains("content-range: bytes 2-5/8"), "{head}");
    assert_eq!(body, b"sm\x01\0");
    let (head, body) = ranged("bytes=-3");
    assert!(
        head.starts_with("http/1.1 206") && body == b"\0\0\0",
        "{head}"
    );
    let (head, body) = ranged("bytes=8-");
    assert!(head.starts_with("http/1.1 416"), "{head}");
    assert!(
        head.contains("content-range: bytes */8") && body.is_empty(),
        "{head}"
    );
    let (head, body) = ranged("bytes=0-1,4-5");
    assert!(
        head.starts_with("http/1.1 200") && body == b"\0asm\x01\0\0\0",
        "{head}"
    );
    // The API is still the API.
    assert_eq!(get_json(&node, "/api/health")["status"], "ok");
    let _ = std::fs::remove_dir_all(&web);
}

/// Run `openssl ARGS` in `dir`; it must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a self-signed certificate (`name.key`, `name.crt` in `dir`), with `extra`
/// arguments to `openssl req`.
fn new_self_signed(dir: &std::path::Path, name: &str, extra: &[&str]) {
    let (crt, key, subject) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("/CN={name}"),
    );
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
        "-keyout", &key, "-out", &crt,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A self-signed certificate for localhost and 127.0.0.1 (the openssl command), as
/// `name.crt` and `name.key` in `dir`.
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let san = ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"];
    new_self_signed(dir, name, &san);
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

/// A certificate authority (`<ca>.crt`, `<ca>.key`) made once, and a leaf for localhost
/// and 127.0.0.1 it signs (`<name>.crt`, `<name>.key`): webpki (the node as a TLS
/// client) takes no self-signed CA certificate as a server's.
fn ca_signed(
    dir: &std::path::Path,
    ca: &str,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    if !dir.join(&ca_crt).exists() {
        new_self_signed(dir, ca, &[]);
    }
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let (crt, key, csr, subject) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("/CN={name}"),
    );
    let request = [
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr,
    ];
    openssl(dir, &request);
    let sign = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        &crt,
    ];
    openssl(dir, &sign);
    (dir.join(ca_crt), dir.join(crt), dir.join(key))
}

/// `curl` over HTTPS trusting `ca`: the status, or None when the TLS connection failed.
fn curl(port: u16, ca: &std::path::Path, token: &str) -> Option<u16> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("https://127.0.0.1:{port}/api/studies"))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    code.filter(|c| *c != 0)
}

/// HTTPS from PEM files (http_tls_cert, http_tls_key): served only over TLS, the new
/// certificate after SIGHUP (issue 34, item 4).
#[test]
fn https_from_pem_files_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("medfm-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (first, first_key) = self_signed(&dir, "first");
    let (live, live_key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&first, &live).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let node = Node::start(
        "https",
        &format!(
            "http_tls_cert = \"{}\"\nhttp_tls_key = \"{}\"\n",
            live.display(),
            live_key.display()
        ),
    );
    let token = node.token();
    assert_eq!(curl(node.http, &first, &token), Some(200));
    // Plain HTTP to the TLS port gets no answer.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "plain HTTP answered");

    // A new certificate in place, SIGHUP: the next handshake uses it.
    let (second, second_key) = self_signed(&dir, "second");
    std::fs::copy(&second, &live).unwrap();
    std::fs::copy(&second_key, &live_key).unwrap();
    assert_eq!(
        curl(node.http, &first, &token),
        Some(200),
        "before SIGHUP: the first"
    );
    node.signal(libc::SIGHUP);
    wait_for(10, "the reload", || {
        node.log().contains("TLS certificate reloaded")
    });
    assert_eq!(curl(node.http, &second, &token), Some(200));
    assert_eq!(
        curl(node.http, &first, &token),
        None,
        "the old certificate is gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// DCMTK's `echoscu`/`storescu` with `+tls`, trusting `ca` (their own key and certificate
/// are `ca`'s pair: the node asks for none).
fn dcmtk_tls(
    node: &Node,
    tool: &str,
    pair: (&std::path::Path, &std::path::Path),
    ca: &std::path::Path,
    files: &[std::path::PathBuf],
) -> std::process::Output {
    dcmtk(tool)
        .arg("+tls")
        .arg(pair.1)
        .arg(pair.0)
        .arg("+cf")
        .arg(ca)
        .args(["-aet", CALLING, "-aec", "MEDFM", "127.0.0.1"])
        .arg(node.port.to_string())
        .args(files)
        .output()
        .unwrap()
}

/// DICOM over TLS (dicom_tls_cert, dicom_tls_key): DCMTK echoes and stores over TLS, a
/// plain association is refused, and after SIGHUP the new certificate is the one served
/// (issue 34, item 4, the listener's half).
#[test]
fn dicom_tls_with_dcmtk_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("medfm-dicom-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (first, first_key) = self_signed(&dir, "first");
    let (live, live_key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&first, &live).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let node = Node::start(
        "dicom-tls",
        &format!(
            "dicom_tls_cert = \"{}\"\ndicom_tls_key = \"{}\"\n",
            live.display(),
            live_key.display()
        ),
    );
    let pair = (first.as_path(), first_key.as_path());
    let out = dcmtk_tls(&node, "echoscu", pair, &first, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !node.echoscu(CALLING, "MEDFM").status.success(),
        "plain DICOM answered"
    );
    let files = brain_files(2, "1.2.826.0.1.3680043.9.7786", &node.dir);
    let out = dcmtk_tls(&node, "storescu", pair, &first, &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(spool_files(&node.spool()).len(), 2);

    let (second, second_key) = self_signed(&dir, "second");
    std::fs::copy(&second, &live).unwrap();
    std::fs::copy(&second_key, &live_key).unwrap();
    node.signal(libc::SIGHUP);
    wait_for(10, "the reload", || {
        node.log().contains("TLS certificate reloaded")
    });
    let out = dcmtk_tls(&node, "echoscu", pair, &second, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dcmtk_tls(&node, "echoscu", pair, &first, &[]);
    assert!(!out.status.success(), "the old certificate is still served");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The node's outbox over DICOM TLS: a forward rule to DCMTK's storescp with `+tls`
/// (which asks for the node's certificate); the instances arrive; a destination whose
/// certificate the node does not trust gets nothing (issue 34, item 4, the sender's half).
#[test]
fn the_outbox_sends_over_dicom_tls_to_dcmtk() {
    let dir = std::env::temp_dir().join(format!("medfm-scu-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, pacs_crt, pacs_key) = ca_signed(&dir, "hospital-ca", "pacs");
    let (node_crt, node_key) = self_signed(&dir, "node");
    let (other_ca, _, _) = ca_signed(&dir, "other-ca", "other");
    let (port, wrong_port) = (free_port(), free_port());
    let tls = |ca: &std::path::Path| {
        format!(
            "tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            ca.display(),
            node_crt.display(),
            node_key.display()
        )
    };
    let node = Node::start(
        "scu-tls",
        &format!(
            "series_idle_seconds = 1\nretry_seconds = 1\nmax_attempts = 2\n\
             [[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {port}\n{}\
             [[destination]]\nname = \"untrusted\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {wrong_port}\n{}\
             [[rule]]\njobs = [\"forward\"]\n",
            tls(&ca),
            tls(&other_ca)
        ),
    );
    let scp_options = |k: &std::path::Path, c: &std::path::Path| {
        vec![
            "+tls".to_string(),
            k.display().to_string(),
            c.display().to_string(),
            "+cf".to_string(),
            node_crt.display().to_string(),
        ]
    };
    let opts = scp_options(&pacs_key, &pacs_crt);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let pacs = StoreScp::start_with(&dir.join("pacs-in"), port, &opts);
    // The second PACS presents the same certificate, which the node was told not to trust.
    let untrusted = StoreScp::start_with(&dir.join("untrusted-in"), wrong_port, &opts);
    let files = brain_files(3, "1.2.826.0.1.3680043.9.7787", &node.dir);
    node.send_ok(&files);
    wait_for(60, "the series at the TLS PACS", || {
        pacs.received().len() == 3
    });
    wait_for(30, "the untrusted send parked", || {
        node.spool()
            .join(".node/parked")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            == 1
    });
    assert!(untrusted.received().is_empty());
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("untrusted") && l.contains("certificate")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
