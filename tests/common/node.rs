//! The edge node's test harness: a `medfm node` process with its own folder, DCMTK's
//! tools as its peers, and what the tests compare (data sets, spool contents).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medfm::dicom::{InstanceIds, identify};

use super::data;

pub const CALLING: &str = "MODALITY";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn dcmtk(tool: &str) -> Command {
    assert!(
        Path::new(&format!("/usr/bin/{tool}")).exists(),
        "DCMTK is needed: apt-get install dcmtk"
    );
    Command::new(tool)
}

/// A `medfm node` process on a folder of its own (configuration, spool, log), restartable.
pub struct Node {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    /// Port of the HTTP API on 127.0.0.1.
    pub http: u16,
    pub starts: usize,
}

impl Node {
    /// Write the configuration (`extra` TOML lines added) and start the node.
    pub fn start(name: &str, extra: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("medfm-node-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let http = free_port();
        std::fs::write(
            dir.join("node.toml"),
            format!(
                "ae_title = \"MEDFM\"\nbind = \"127.0.0.1\"\nport = {port}\nhttp = \"127.0.0.1:{http}\"\nspool = \"{}\"\n\
                 allowed_calling_aes = [\"{CALLING}\", \"OTHER_OK\"]\nidle_timeout_seconds = 10\n{extra}",
                dir.join("spool").display()
            ),
        )
        .unwrap();
        let mut node = Node {
            child: None,
            dir,
            port,
            http,
            starts: 0,
        };
        node.spawn();
        node
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// (Re)start the process and wait for its "listening" line.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = Command::new(super::medfm_exe())
            .args(["node", "--config"])
            .arg(self.dir.join("node.toml"))
            .env("MEDFM_WEIGHTS_DIR", super::weights_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start medfm node");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("medfm node listening").count() < self.starts {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("medfm node exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A numeric field of the node process's `/proc/PID/status` (`VmHWM:`, `Threads:`).
    fn status(&self, name: &str) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the node's /proc status"))
    }

    /// (VmHWM, VmRSS) of the node process in KiB: its peak and current resident memory.
    pub fn memory_kb(&self) -> (u64, u64) {
        (self.status("VmHWM:"), self.status("VmRSS:"))
    }

    /// The token of the node's HTTP API, as `medfm node --print-token` shows it.
    pub fn token(&self) -> String {
        let out = Command::new(super::medfm_exe())
            .args(["node", "--print-token", "--config"])
            .arg(self.dir.join("node.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// One request to the node's HTTP API with its token: status and body.
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        http(self.http, method, path, body, Some(&self.token()))
    }

    /// Threads of the node process now.
    pub fn threads(&self) -> u64 {
        self.status("Threads:")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// Send `signal` to the node.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }

    /// SIGTERM; the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// DCMTK's storescu sending `files` in one association, each in its own transfer
    /// syntax (as a modality does): a storescu configuration proposes one presentation
    /// context per SOP class and transfer syntax of the files.
    pub fn storescu(&self, calling: &str, files: &[PathBuf]) -> std::process::Output {
        self.storescu_cmd(calling, files).output().unwrap()
    }

    pub fn storescu_cmd(&self, calling: &str, files: &[PathBuf]) -> Command {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = self.dir.join(format!("storescu-{n}.cfg"));
        std::fs::write(&cfg, storescu_config(files)).unwrap();
        let mut c = dcmtk("storescu");
        c.args(["-v", "-xf"])
            .arg(&cfg)
            .args(["AsIs", "-aet", calling, "-aec", "MEDFM", "127.0.0.1"])
            .arg(self.port.to_string())
            .args(files);
        c
    }

    /// storescu that must succeed (every instance acknowledged).
    pub fn send_ok(&self, files: &[PathBuf]) {
        let out = self.storescu(CALLING, files);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn echoscu(&self, calling: &str, called: &str) -> std::process::Output {
        dcmtk("echoscu")
            .args(["-aet", calling, "-aec", called, "127.0.0.1"])
            .arg(self.port.to_string())
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A storescu configuration file (profile `AsIs`): for each SOP class of `files`, one
/// presentation context per transfer syntax of the files.
pub fn storescu_config(files: &[PathBuf]) -> String {
    let mut classes = Vec::new();
    let mut syntaxes = Vec::new();
    for f in files {
        // From the file meta (the refusal tests' files have data sets medfm refuses).
        let obj = dicom_object::open_file(f).unwrap();
        let class = obj.meta().media_storage_sop_class_uid().to_string();
        let ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        if !classes.contains(&class) {
            classes.push(class);
        }
        if !syntaxes.contains(&ts) {
            syntaxes.push(ts);
        }
    }
    let mut cfg = String::from("[[TransferSyntaxes]]\n");
    for (i, ts) in syntaxes.iter().enumerate() {
        cfg += &format!("[TS{i}]\nTransferSyntax1 = {ts}\n");
    }
    cfg += "[[PresentationContexts]]\n[Contexts]\n";
    let mut n = 0;
    for class in &classes {
        for i in 0..syntaxes.len() {
            n += 1;
            cfg += &format!("PresentationContext{n} = {class}\\TS{i}\n");
        }
    }
    assert!(n <= 128, "{n} presentation contexts");
    cfg + "[[Profiles]]\n[AsIs]\nPresentationContexts = Contexts\n"
}

/// The data set of a Part 10 file: the bytes after its file meta group.
pub fn data_set(file: &[u8]) -> &[u8] {
    assert_eq!(&file[128..132], b"DICM");
    assert_eq!(
        &file[132..136],
        &[2, 0, 0, 0],
        "file meta starts with its group length"
    );
    let len = u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize;
    &file[144 + len..]
}

/// The data set's bytes, inflated when the transfer syntax is deflate (storescu deflates
/// with its own settings, so only the inflated bytes are the same).
pub fn content(file: &[u8]) -> Vec<u8> {
    let ds = data_set(file);
    if identify(file).unwrap().transfer_syntax == "1.2.840.10008.1.2.1.99" {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(ds), &mut out).unwrap();
        out
    } else {
        ds.to_vec()
    }
}

pub fn spooled(node: &Node, ids: &InstanceIds) -> PathBuf {
    node.spool()
        .join(&ids.study_instance_uid)
        .join(&ids.series_instance_uid)
        .join(format!("{}.dcm", ids.sop_instance_uid))
}

/// Every file in the spool's study folders (not the node's `.tmp` and `.node`).
pub fn spool_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The 11 slices of the brain MR series (tests/data/series/brain11), in name order.
pub fn brain() -> Vec<PathBuf> {
    fixtures()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("brain"))
        .collect()
}

/// Fixtures with distinct SOP instances: several transfer syntaxes (explicit and implicit
/// little endian, big endian, deflate, JPEG baseline/extended/lossless, JPEG 2000, RLE)
/// and SOP classes (MR, CT, SC, US, Enhanced MR, SEG, RT Dose).
pub fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "CT_small.dcm",
        "JPEG-LL.dcm",
        "693_UNCR.dcm",
        "examples_ybr_color.dcm",
        "decode/693_J2KI.dcm",
        "decode/JPEG2000.dcm",
        "decode/JPGExtended.dcm",
        "decode/MR_small_bigendian.dcm",
        "decode/OBXXXX1A_rle.dcm",
        "decode/SC_rgb_jpeg_dcmtk.dcm",
        "decode/SC_rgb_rle.dcm",
        "decode/emri_small_jpeg12.dcm",
        "decode/image_dfl.dcm",
        "decode/liver_1frame.dcm",
        "decode/rtdose.dcm",
    ]
    .iter()
    .map(|f| data(f))
    .collect();
    let mut brain: Vec<PathBuf> = std::fs::read_dir(data("series/brain11"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    brain.sort();
    files.extend(brain);
    files
}

/// Copies of `files` in `dir` as DCMTK writes them (`dcmconv`, same transfer syntax):
/// storescu re-encodes what it sends from its in-memory object, so these are the bytes a
/// DCMTK modality puts on the wire, which the spool must keep byte for byte.
pub fn as_dcmtk_writes(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let out = dir.join(format!(
                "{i:03}-{}",
                f.file_name().unwrap().to_string_lossy()
            ));
            let st = dcmtk("dcmconv").arg(f).arg(&out).output().unwrap();
            assert!(
                st.status.success(),
                "dcmconv {}: {}",
                f.display(),
                String::from_utf8_lossy(&st.stderr)
            );
            // storescu leaves DataSetTrailingPadding (FFFC,FFFC) out of what it sends.
            let st = dcmtk("dcmodify")
                .args(["-nb", "-imt", "-e", "(fffc,fffc)"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "dcmodify: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            out
        })
        .collect()
}

/// The files of one storescu run that it saw acknowledged with Success.
pub fn acknowledged(out: &std::process::Output, files: &[PathBuf]) -> Vec<PathBuf> {
    // storescu -v prints "Sending file: <path>" then, per C-STORE, "Received Store
    // Response (Success)" (or an error); the responses follow the files in order.
    let text = String::from_utf8_lossy(&out.stderr);
    let mut current: Option<PathBuf> = None;
    let mut acked = Vec::new();
    for line in text.lines() {
        if let Some(p) = line.split("Sending file: ").nth(1) {
            current = files
                .iter()
                .find(|f| f.to_string_lossy() == p.trim())
                .cloned();
        } else if line.contains("Received Store Response (Success)") {
            acked.extend(current.take());
        }
    }
    acked
}

/// `n` distinct instances of one series made from the brain slices (SOP instance UIDs
/// `<uid_root>.1..=n`), written as DCMTK writes them under `dir/sent`.
pub fn brain_instances(n: usize, uid_root: &str, dir: &Path) -> Vec<PathBuf> {
    as_dcmtk_writes(&brain_files(n, uid_root, dir), &dir.join("sent"))
}

/// The same, as dicom-rs writes them (under `dir/src`).
pub fn brain_files(n: usize, uid_root: &str, dir: &Path) -> Vec<PathBuf> {
    let src_dir = dir.join("src");
    std::fs::create_dir_all(&src_dir).unwrap();
    let brain = brain();
    let mut made = Vec::new();
    for i in 0..n {
        let uid = format!("{uid_root}.{}", i + 1);
        let bytes = super::edited(&brain[i % brain.len()], |o| {
            o.put_str(
                dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                dicom_core::VR::UI,
                uid.as_str(),
            );
            o.meta_mut().media_storage_sop_instance_uid = uid.clone();
        });
        let p = src_dir.join(format!("{i:04}.dcm"));
        std::fs::write(&p, bytes).unwrap();
        made.push(p);
    }
    made
}

/// DCMTK's `storescp` as the PACS (AE title PACS, every transfer syntax it knows),
/// writing what it receives to its own folder; stopped on drop.
pub struct StoreScp {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl StoreScp {
    pub fn start(dir: &Path, port: u16) -> StoreScp {
        Self::start_with(dir, port, &[])
    }

    /// With more storescp options (e.g. `--sleep-after 1`: a slow PACS).
    pub fn start_with(dir: &Path, port: u16, options: &[&str]) -> StoreScp {
        std::fs::create_dir_all(dir).unwrap();
        let child = dcmtk("storescp")
            .args(options)
            .args(["-aet", "PACS", "+xa", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "storescp did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        StoreScp {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The SOP instances received so far: UID -> file.
    pub fn received(&self) -> std::collections::BTreeMap<String, PathBuf> {
        let mut out = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if let Ok(bytes) = std::fs::read(&p)
                && let Ok(ids) = identify(&bytes)
            {
                out.insert(ids.sop_instance_uid, p);
            }
        }
        out
    }
}

impl StoreScp {
    /// Each of `files` (as sent) was received with the same data set content.
    pub fn assert_holds(&self, files: &[PathBuf]) {
        let received = self.received();
        for f in files {
            let sent = std::fs::read(f).unwrap();
            let uid = identify(&sent).unwrap().sop_instance_uid;
            let at_pacs = std::fs::read(&received[&uid]).unwrap();
            assert!(
                content(&at_pacs) == content(&sent),
                "{} changed on the way",
                f.display()
            );
        }
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `done` holds (polling), at most `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request (Connection: close): status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    std::io::Write::write_fmt(
        &mut s,
        format_args!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = out[end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line + 2..line + 2 + size]);
        b = &b[line + 2 + size + 2..];
    }
}
