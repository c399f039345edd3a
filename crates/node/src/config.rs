//! `node.toml`: the edge node's configuration (every key is documented in docs/node.md;
//! `medfm node --print-config` prints the effective one).
//!
//! Unknown keys are refused: a typo must not silently fall back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use medfm::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

pub use medfm::jobs::rules::{JobKind, Rule};

/// What every check here returns: a configuration error is bad input (`medfm node` exits 2),
/// a file it names that can't be read an I/O error (exit 5).
type Result<T, E = Error> = std::result::Result<T, E>;

/// Return a bad-input error: `format!`'s arguments.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err(Error::new(ErrorKind::BadInput, format!($($t)*)))
    };
}

/// `what: e`, bad input.
fn bad(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::BadInput, format!("{what}: {e}"))
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Called AE title of the node (1-16 characters).
    pub ae_title: String,
    /// Address the DICOM listener binds to.
    pub bind: IpAddr,
    /// DICOM port.
    pub port: u16,
    /// Root of the spool: `<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`.
    pub spool: PathBuf,
    /// Calling AE titles allowed to associate; empty: any.
    pub allowed_calling_aes: Vec<String>,
    /// Largest PDU the node receives (bytes).
    pub max_pdu: u32,
    /// Associations served at once; more are rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// Seconds a peer has to send its association request after connecting.
    pub association_timeout_seconds: u64,
    /// Seconds without a PDU after which an association is aborted.
    pub idle_timeout_seconds: u64,
    /// Seconds a DIMSE message (a command and its data set) may take from its first
    /// fragment to its last; a peer past it is cut, however it trickles its bytes.
    pub message_timeout_seconds: u64,
    /// Largest instance accepted (MiB); larger ones are refused (A700, out of resources).
    pub max_instance_mb: u64,
    /// Memory (MiB) the node may hold for instances being received and checked, across
    /// all associations and the watch folder; an instance that would pass it is refused
    /// (A700, out of resources: the peer retries later).
    pub memory_budget_mb: u64,
    /// Disk quota of the spool (MiB); 0: none. An instance that would exceed it is
    /// refused (A700) and nothing is written.
    pub quota_mb: u64,
    /// Watch folder: DICOM files dropped here are imported into the spool; "" none.
    pub inbox: String,
    /// Where unreadable inbox files go, with `<name>.reason.txt`; "": `rejected` beside
    /// the inbox.
    pub rejected: String,
    /// Address of the HTTP API; "" turns it off.
    pub http: String,
    /// Host names the HTTP API answers to besides its address (and `localhost` on
    /// loopback), as a browser sends them in `Host`: the cart's DNS name, say. A request
    /// naming any other host is refused (DNS rebinding).
    pub http_hosts: Vec<String>,
    /// HTTPS: the certificate chain (PEM) of the HTTP API; with `http_tls_key`, the API
    /// speaks only TLS. Read at start and again on SIGHUP. "" none.
    pub http_tls_cert: String,
    /// HTTPS: the private key (PEM) of `http_tls_cert`.
    pub http_tls_key: String,
    /// DICOM TLS: the certificate chain (PEM) of the DICOM listener; with
    /// `dicom_tls_key`, associations are accepted only over TLS. Read at start and again
    /// on SIGHUP. "" none.
    pub dicom_tls_cert: String,
    /// DICOM TLS: the private key (PEM) of `dicom_tls_cert`.
    pub dicom_tls_key: String,
    /// Bearer token the HTTP API requires on every request; needed when `http` is not a
    /// loopback address.
    pub http_token: String,
    /// Folder of the built web app (`trunk build --release` -> dist/) served by the HTTP
    /// API at `/`, so a kiosk browser on the cart opens it from the node; "" none.
    pub web_root: String,
    /// A series is complete (its rules' jobs run) after this many seconds without a new
    /// instance.
    pub series_idle_seconds: u64,
    /// `/api/health` answers 503 when one step of the work thread (a file, a series, a
    /// job, a send) has run this long: the thread is stuck.
    pub work_stuck_seconds: u64,
    /// Seconds one model run (a rule's segment or embed job, an API request) may take;
    /// checked between slices, a run past it stops and fails. Fractions allowed. Keep it
    /// under `work_stuck_seconds`, which reports a slice that never ends.
    pub model_timeout_seconds: f64,
    /// Attempts of a job or a send before it is parked with its error.
    pub max_attempts: u32,
    /// Wait before the first retry (seconds); doubled at each retry, at most an hour.
    pub retry_seconds: u64,
    /// Where the model runs: `auto` (a real GPU when there is one, else the CPU), `cpu`
    /// or `gpu`.
    pub device: medfm::pipeline::device::DeviceChoice,
    /// CPU threads of the model (CPU backend and kernels); absent: all the machine's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Series (UIDs) whose model runs panic on purpose: a test hook, to show a panicking
    /// model leaves the node serving. Leave empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_panic_series: Vec<String>,
    /// Where results and forwarded instances go (C-STORE).
    #[serde(rename = "destination")]
    pub destinations: Vec<Destination>,
    /// What runs when a series is complete: the jobs of every rule that matches it.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

/// A DICOM peer the node sends to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Name the rules use.
    pub name: String,
    /// C-STORE: its AE title, host and port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ae_title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// STOW-RS instead: the destination's DICOMweb service root (`https://pacs/dicom-web`;
    /// the node posts to ROOT/studies). A destination is one or the other.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dicomweb: String,
    /// STOW-RS credentials: a bearer token, or `USER:PASSWORD` for basic authentication
    /// (at most one; never printed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dicomweb_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dicomweb_user: String,
    /// DICOM TLS: the certificates (PEM) the destination's must chain to; set, the node
    /// associates only over TLS, checking the certificate names `host`. Absent: plain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_ca: String,
    /// DICOM TLS: the node's own certificate chain and key (PEM) for a destination that
    /// asks for one (DCMTK's storescp does by default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_key: String,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

impl Destination {
    /// The STOW-RS credentials (none, a token or a user; checked by `Config::check`).
    pub fn dicomweb_auth(&self) -> Result<medfm_dicomweb_client::Auth> {
        let given = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match (given(&self.dicomweb_token), given(&self.dicomweb_user)) {
            (None, None) => Ok(medfm_dicomweb_client::Auth::none()),
            (token, user) => medfm_dicomweb_client::Auth::new(token, user)
                .map_err(|e| bad("dicomweb_token, dicomweb_user", e)),
        }
    }

    /// The rustls client configuration for this destination; None: plain TCP.
    pub fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        if self.tls_ca.is_empty() {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        let ca = || format!("tls_ca {}", self.tls_ca);
        for cert in CertificateDer::pem_file_iter(&self.tls_ca).map_err(|e| bad(ca(), e))? {
            roots
                .add(cert.map_err(|e| bad(ca(), e))?)
                .map_err(|e| bad(ca(), e))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", e))?
        .with_root_certificates(roots);
        let config = if self.tls_cert.is_empty() {
            builder.with_no_client_auth()
        } else {
            let chain = CertificateDer::pem_file_iter(&self.tls_cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("tls_cert {}", self.tls_cert), e))?;
            let key = PrivateKeyDer::from_pem_file(&self.tls_key)
                .map_err(|e| bad(format!("tls_key {}", self.tls_key), e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(format!("tls_cert {}", self.tls_cert), e))?
        };
        Ok(Some(std::sync::Arc::new(config)))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ae_title: "MEDFM".into(),
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 11112,
            spool: PathBuf::from("/var/lib/medfm/spool"),
            allowed_calling_aes: Vec::new(),
            max_pdu: 65536,
            max_associations: 8,
            association_timeout_seconds: 30,
            idle_timeout_seconds: 120,
            message_timeout_seconds: 600,
            max_instance_mb: 512,
            memory_budget_mb: 1024,
            quota_mb: 0,
            inbox: String::new(),
            rejected: String::new(),
            http: "127.0.0.1:8181".into(),
            http_hosts: Vec::new(),
            http_tls_cert: String::new(),
            http_tls_key: String::new(),
            dicom_tls_cert: String::new(),
            dicom_tls_key: String::new(),
            http_token: String::new(),
            web_root: String::new(),
            series_idle_seconds: 30,
            work_stuck_seconds: 1800,
            model_timeout_seconds: 900.0,
            max_attempts: 8,
            retry_seconds: 5,
            device: Default::default(),
            threads: None,
            test_panic_series: Vec::new(),
            destinations: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl Config {
    /// Read and check `path`; without a path, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read the node configuration {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text).map_err(|e| e.context(format!("node configuration {}", path.display())))
    }

    /// Parse and check a configuration's text.
    pub fn parse(text: &str) -> Result<Config> {
        let table: toml::Table = toml::from_str(text).map_err(|e| bad("TOML", e))?;
        let config: Config = table.try_into().map_err(|e| bad("TOML", e))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        check_ae_title(&self.ae_title).map_err(|e| e.context("ae_title"))?;
        for ae in &self.allowed_calling_aes {
            check_ae_title(ae).map_err(|e| e.context("allowed_calling_aes"))?;
        }
        if self.port == 0 {
            bail!("port: 0 is not a port");
        }
        if !(4096..=1 << 20).contains(&self.max_pdu) {
            bail!("max_pdu: {} is outside 4096..=1048576", self.max_pdu);
        }
        if self.max_associations == 0 {
            bail!("max_associations: at least 1");
        }
        if self.association_timeout_seconds == 0
            || self.idle_timeout_seconds == 0
            || self.message_timeout_seconds == 0
        {
            bail!(
                "association_timeout_seconds, idle_timeout_seconds and message_timeout_seconds: at least 1"
            );
        }
        if self.max_instance_mb == 0 || self.max_instance_mb > 1 << 20 {
            bail!("max_instance_mb: 1..=1048576");
        }
        if self.memory_budget_mb < self.max_instance_mb {
            bail!(
                "memory_budget_mb ({}) must hold one instance of max_instance_mb ({})",
                self.memory_budget_mb,
                self.max_instance_mb
            );
        }
        if self.spool.as_os_str().is_empty() {
            bail!("spool: a folder is needed");
        }
        if let Some(addr) = self.http_addr()?
            && !addr.ip().is_loopback()
            && self.http_token.is_empty()
        {
            bail!("http: {addr} is reachable from other machines: set http_token");
        }
        if self.http_tls_cert.is_empty() != self.http_tls_key.is_empty() {
            bail!("http_tls_cert and http_tls_key: both, or neither");
        }
        if self.dicom_tls_cert.is_empty() != self.dicom_tls_key.is_empty() {
            bail!("dicom_tls_cert and dicom_tls_key: both, or neither");
        }
        if self.threads == Some(0) {
            bail!("threads: at least 1 (absent: all the machine's)");
        }
        if self.max_attempts == 0
            || self.retry_seconds == 0
            || self.series_idle_seconds == 0
            || self.work_stuck_seconds == 0
        {
            bail!(
                "max_attempts, retry_seconds, series_idle_seconds and work_stuck_seconds: at least 1"
            );
        }
        if !(self.model_timeout_seconds > 0.0 && self.model_timeout_seconds <= 1e9) {
            bail!("model_timeout_seconds: more than 0 (seconds, at most 1e9)");
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if d.name.is_empty() || self.destinations[..i].iter().any(|o| o.name == d.name) {
                bail!("destination {:?}: a name, given once", d.name);
            }
            if !d.dicomweb.is_empty() {
                let c_store_keys = [&d.ae_title, &d.host, &d.tls_ca, &d.tls_cert, &d.tls_key];
                if d.port != 0 || c_store_keys.iter().any(|k| !k.is_empty()) {
                    bail!(
                        "destination {:?}: dicomweb (STOW-RS) or ae_title, host and port (C-STORE), not both",
                        d.name
                    );
                }
                medfm::dicomweb::url::Resource::parse(&d.dicomweb)
                    .map_err(|e| bad(format!("destination {:?}: dicomweb", d.name), e))?;
                d.dicomweb_auth()
                    .map_err(|e| e.context(format!("destination {:?}", d.name)))?;
                continue;
            }
            if !d.dicomweb_token.is_empty() || !d.dicomweb_user.is_empty() {
                bail!(
                    "destination {:?}: dicomweb_token and dicomweb_user go with dicomweb",
                    d.name
                );
            }
            if d.host.is_empty() || d.port == 0 {
                bail!(
                    "destination {:?}: ae_title, host and port (C-STORE), or dicomweb (STOW-RS)",
                    d.name
                );
            }
            check_ae_title(&d.ae_title)
                .map_err(|e| e.context(format!("destination {:?}", d.name)))?;
            if d.tls_cert.is_empty() != d.tls_key.is_empty()
                || (!d.tls_cert.is_empty() && d.tls_ca.is_empty())
            {
                bail!(
                    "destination {:?}: tls_cert and tls_key go together, and with tls_ca",
                    d.name
                );
            }
            d.tls()
                .map_err(|e| e.context(format!("destination {:?}", d.name)))?;
        }
        medfm::jobs::rules::check_rules(&self.rules)?;
        for (i, r) in self.rules.iter().enumerate() {
            for name in &r.send_to {
                if !self.destinations.iter().any(|d| &d.name == name) {
                    bail!("rule {}: send_to {name:?} is not a [[destination]]", i + 1);
                }
            }
            if r.jobs.contains(&JobKind::Forward) && self.destinations.is_empty() {
                bail!("rule {}: forward needs a [[destination]]", i + 1);
            }
        }
        Ok(())
    }

    /// The watch folder and its rejected folder (None: no watch folder).
    pub fn inbox_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        if self.inbox.is_empty() {
            return None;
        }
        let inbox = PathBuf::from(&self.inbox);
        let rejected = if self.rejected.is_empty() {
            inbox
                .parent()
                .map_or_else(|| PathBuf::from("rejected"), |p| p.join("rejected"))
        } else {
            PathBuf::from(&self.rejected)
        };
        Some((inbox, rejected))
    }

    /// The HTTP API's address (None: off).
    pub fn http_addr(&self) -> Result<Option<SocketAddr>> {
        if self.http.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.http.parse().map_err(|_| {
            Error::new(
                ErrorKind::BadInput,
                format!(
                    "http: {:?} is not an address like 127.0.0.1:8181",
                    self.http
                ),
            )
        })?))
    }

    /// The DICOM listener's address.
    pub fn dicom_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Largest instance in bytes.
    pub fn max_instance_bytes(&self) -> u64 {
        self.max_instance_mb << 20
    }

    /// The HTTPS certificate and key files, when set (both checked readable at start).
    pub fn http_tls(&self) -> Result<Option<super::server::Tls>> {
        super::server::Tls::configured("http_tls", &self.http_tls_cert, &self.http_tls_key)
    }

    /// The DICOM listener's certificate and key files, when set.
    pub fn dicom_tls(&self) -> Result<Option<super::server::Tls>> {
        super::server::Tls::configured("dicom_tls", &self.dicom_tls_cert, &self.dicom_tls_key)
    }

    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget_mb.saturating_mul(1 << 20)
    }

    /// Spool quota in bytes (None: no quota).
    pub fn quota_bytes(&self) -> Option<u64> {
        (self.quota_mb > 0).then_some(self.quota_mb << 20)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    pub fn series_idle(&self) -> Duration {
        Duration::from_secs(self.series_idle_seconds)
    }

    /// The rule whose [`Rule::key`] is `key`.
    pub fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.key() == key)
    }

    /// The destinations a rule sends to.
    pub fn destinations_of(&self, rule: &Rule) -> Vec<Destination> {
        self.destinations
            .iter()
            .filter(|d| rule.send_to.is_empty() || rule.send_to.contains(&d.name))
            .cloned()
            .collect()
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs(self.message_timeout_seconds)
    }

    pub fn model_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.model_timeout_seconds)
    }

    pub fn association_timeout(&self) -> Duration {
        Duration::from_secs(self.association_timeout_seconds)
    }

    /// The configuration as TOML (`--print-config`; the token is not shown).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.http_token.is_empty() {
            shown.http_token = "(set)".into();
        }
        for d in &mut shown.destinations {
            for secret in [&mut d.dicomweb_token, &mut d.dicomweb_user] {
                if !secret.is_empty() {
                    *secret = "(set)".into();
                }
            }
        }
        toml::to_string(&shown).expect("the configuration serialises")
    }
}

/// An AE title (PS3.5, VR AE): 1 to 16 characters of printable ASCII without `\`, not
/// only spaces. Leading and trailing spaces are not significant, so they are refused
/// here to avoid two spellings of one title.
pub fn check_ae_title(ae: &str) -> Result<()> {
    if ae.is_empty() || ae.len() > 16 {
        bail!("AE title {ae:?}: 1 to 16 characters");
    }
    if !ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        bail!("AE title {ae:?}: printable ASCII without backslash only");
    }
    if ae.trim() != ae {
        bail!("AE title {ae:?}: no leading or trailing spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_case_insensitively_with_patterns() {
        let ids = medfm::dicom::InstanceIds {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            sop_instance_uid: "1.2".into(),
            study_instance_uid: "1.3".into(),
            series_instance_uid: "1.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            modality: "MR".into(),
            body_part: "HEAD".into(),
            series_description: "FSE PD AXIAL OBL".into(),
        };
        let rule = |m: Option<&str>, d: Option<&str>| Rule {
            modality: m.map(String::from),
            series_description: d.map(String::from),
            jobs: vec![JobKind::Forward],
            ..Rule::default()
        };
        assert!(rule(None, None).matches(&ids));
        assert!(rule(Some("mr"), Some("*pd*axial*")).matches(&ids));
        assert!(rule(Some("MR"), Some("FSE ?? AXIAL OBL")).matches(&ids));
        assert!(!rule(Some("CT"), None).matches(&ids));
        assert!(!rule(None, Some("*T1*")).matches(&ids));
    }

    #[test]
    fn contract_keys_parse_and_defaults_fill_the_rest() {
        let c = Config::parse(
            "ae_title = \"EDGE1\"\nport = 104\nspool = \"/tmp/s\"\nallowed_calling_aes = [\"MODALITY\"]\n",
        )
        .unwrap();
        assert_eq!(c.ae_title, "EDGE1");
        assert_eq!(c.port, 104);
        assert_eq!(c.allowed_calling_aes, ["MODALITY"]);
        assert_eq!(c.max_associations, Config::default().max_associations);
        // The printed configuration reads back as itself.
        let again = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn a_destination_is_c_store_or_stow_rs_and_its_secrets_are_not_printed() {
        let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
        let stow = "[[destination]]\nname = \"pacs\"\ndicomweb = \"https://pacs/dicom-web\"\n";
        let c = Config::parse(&format!("{stow}dicomweb_user = \"u:secret\"\n")).unwrap();
        assert!(c.destinations[0].dicomweb_auth().is_ok());
        let shown = c.to_toml();
        assert!(
            !shown.contains("secret") && shown.contains("(set)"),
            "{shown}"
        );
        assert!(err(&format!("{stow}host = \"h\"\nport = 104\n")).contains("not both"));
        assert!(err(&format!("{stow}tls_ca = \"ca.pem\"\n")).contains("not both"));
        assert!(err(&format!("{stow}dicomweb_user = \"no-colon\"\n")).contains("USER:PASSWORD"));
        assert!(
            err(&format!(
                "{stow}dicomweb_token = \"t\"\ndicomweb_user = \"u:p\"\n"
            ))
            .contains("not both")
        );
        assert!(
            err("[[destination]]\nname = \"pacs\"\ndicomweb = \"ftp://pacs\"\n")
                .contains("dicomweb")
        );
        assert!(
            err("[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 104\ndicomweb_token = \"t\"\n")
                .contains("go with dicomweb")
        );
        assert!(err("[[destination]]\nname = \"pacs\"\n").contains("or dicomweb"));
        // The kind of every configuration error: bad input (`medfm node` exits 2).
        assert_eq!(
            Config::parse("port = 0").unwrap_err().kind(),
            ErrorKind::BadInput
        );
    }

    #[test]
    fn typos_bad_values_and_unimplemented_keys_are_refused() {
        let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
        assert!(err("ae_titel = \"X\"").contains("unknown field"));
        assert!(err("ae_title = \"MUCH_TOO_LONG_TITLE\"").contains("1 to 16"));
        assert!(err("ae_title = \"A\\\\B\"").contains("backslash"));
        assert!(err("allowed_calling_aes = [\" X\"]").contains("spaces"));
        assert!(err("port = 0").contains("not a port"));
        assert!(err("port = 70000").contains("port"));
        assert!(err("max_pdu = 10").contains("max_pdu"));
        assert!(err("http = \"0.0.0.0:8181\"").contains("set http_token"));
        assert!(err("http = \"localhost\"").contains("not an address"));
        assert!(
            Config::parse("http = \"0.0.0.0:8181\"\nhttp_token = \"s\"")
                .unwrap()
                .to_toml()
                .contains("(set)")
        );
        assert!(
            err("[[rule]]\nmodality = \"MR\"\njobs = [\"forward\"]")
                .contains("needs a [[destination]]")
        );
        assert!(
            err("[[rule]]\nmodality = \"MR\"\njobs = [\"teleport\"]").contains("unknown variant")
        );
        let dest =
            "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 104\n";
        assert!(
            err(&format!(
                "{dest}[[rule]]\njobs = [\"forward\"]\nsend_to = [\"nas\"]"
            ))
            .contains("not a [[destination]]")
        );
        assert!(err(&format!("{dest}{dest}")).contains("given once"));
        assert!(err("[[rule]]\njobs = [\"segment\"]").contains("go together"));
        let seg = "[[rule]]\njobs = [\"segment\"]\n[[rule.segment]]\nlabel = \"x\"\n";
        assert!(err(&format!("{seg}box = [0.5, 0.1, 0.4, 0.9]")).contains("box fractions"));
        assert!(err(&format!("{seg}box = [0.1, 0.1, 0.4, 1.5]")).contains("box fractions"));
        assert!(
            err(&format!("{seg}box = [0.1, 0.1, 0.4, 0.9]\nextent = 2")).contains("need propagate")
        );
        let ok = Config::parse(&format!(
            "{seg}box = [0.1, 0.1, 0.4, 0.9]\npropagate = true\nextent = 2"
        ))
        .unwrap();
        assert_eq!(ok.rules[0].segments[0].extent, Some(2));
        assert_eq!(
            Config::parse(&ok.to_toml()).unwrap().to_toml(),
            ok.to_toml()
        );
        assert!(err("bind = \"localhost\"").contains("bind"));
    }

    #[test]
    fn rules_are_known_by_name_or_content_never_by_place() {
        let dest =
            "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 104\n";
        let (a, b) = (
            "[[rule]]\nname = \"a\"\nmodality = \"MR\"\njobs = [\"forward\"]\n",
            "[[rule]]\nmodality = \"CT\"\njobs = [\"forward\"]\n",
        );
        let one = Config::parse(&format!("{dest}{a}{b}")).unwrap();
        let two = Config::parse(&format!("{dest}{b}{a}")).unwrap();
        let keys = |c: &Config| c.rules.iter().map(Rule::key).collect::<Vec<_>>();
        let (k1, k2) = (keys(&one), keys(&two));
        assert_eq!(k1[0], "a");
        assert!(k1[1].starts_with("rule-") && k1[1].len() == 17, "{}", k1[1]);
        assert_eq!(
            (&k1[0], &k1[1]),
            (&k2[1], &k2[0]),
            "the same keys, reordered"
        );
        assert_eq!(two.rule("a").unwrap().modality.as_deref(), Some("MR"));
        // An edited unnamed rule is another rule.
        let edited = Config::parse(&format!(
            "{dest}[[rule]]\nmodality = \"CT\"\njobs = [\"forward\", \"embed\"]\n"
        ))
        .unwrap();
        assert!(edited.rule(&k1[1]).is_none());
        // Two rules with one name, or the same content and no name, are refused.
        let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
        assert!(err(&format!("{dest}{a}{a}")).contains("the same name as rule 1"));
        assert!(err(&format!("{dest}{b}{b}")).contains("the same name as rule 1"));
    }
}
