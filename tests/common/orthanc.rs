//! A real DICOMweb server for the tests: Debian's Orthanc with its DICOMweb plugin,
//! started on 127.0.0.1 with a temporary configuration (its own storage, basic auth on),
//! stopped and removed on drop. Included by the tests that need it (`#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::node::free_port;

pub const USER: &str = "medfm";
pub const PASSWORD: &str = "s3cret";
pub const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

pub fn basic() -> String {
    // "medfm:s3cret" in base64.
    "Basic bWVkZm06czNjcmV0".into()
}

/// A running Orthanc, stopped and removed on drop.
pub struct Orthanc {
    child: Child,
    pub dir: PathBuf,
    pub http: u16,
}

impl Orthanc {
    pub fn start() -> Orthanc {
        assert!(
            Path::new("/usr/sbin/Orthanc").exists() && Path::new(PLUGIN).exists(),
            "Orthanc and its DICOMweb plugin are needed: apt-get install orthanc orthanc-dicomweb"
        );
        // One folder per server: the tests of this file run in parallel, each with its own
        // Orthanc (a shared index would be locked by the first).
        let http = free_port();
        let dir = std::env::temp_dir().join(format!("medfm-orthanc-{}-{http}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({
            "Name": "medfm-test",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "HttpPort": http,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "StableAge": 1,
        });
        let cfg = dir.join("orthanc.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
        let child = Command::new("/usr/sbin/Orthanc")
            .arg(&cfg)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start Orthanc");
        let o = Orthanc { child, dir, http };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = o.get("/system")
                && r.0 == 200
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "Orthanc did not answer within 60 s: {}",
                std::fs::read_to_string(o.dir.join("orthanc.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        o
    }

    pub fn root(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http)
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    pub fn get(&self, path: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
        let r = Self::agent()
            .get(format!("http://127.0.0.1:{}{path}", self.http))
            .header("Authorization", basic())
            .call()?;
        let status = r.status().as_u16();
        Ok((
            status,
            r.into_body()
                .into_with_config()
                .limit(1 << 30)
                .read_to_vec()?,
        ))
    }

    /// The file Orthanc stores for the instance `sop_instance_uid` (REST: /tools/lookup,
    /// then /instances/ID/file), or None when it has none.
    pub fn file_of(&self, sop_instance_uid: &str) -> Option<Vec<u8>> {
        let r = Self::agent()
            .post(format!("http://127.0.0.1:{}/tools/lookup", self.http))
            .header("Authorization", basic())
            .send(sop_instance_uid)
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "lookup {sop_instance_uid}");
        let found: serde_json::Value =
            serde_json::from_slice(&r.into_body().read_to_vec().unwrap()).unwrap();
        let id = found.as_array()?.iter().find(|e| e["Type"] == "Instance")?["ID"]
            .as_str()?
            .to_string();
        let (status, body) = self.get(&format!("/instances/{id}/file")).unwrap();
        assert_eq!(status, 200, "instance {id}");
        Some(body)
    }

    /// Upload a file through the REST API (POST /instances).
    pub fn upload(&self, file: &Path) {
        let r = Self::agent()
            .post(format!("http://127.0.0.1:{}/instances", self.http))
            .header("Authorization", basic())
            .send(&std::fs::read(file).unwrap()[..])
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "upload {}", file.display());
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
