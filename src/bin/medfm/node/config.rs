//! `node.toml`: the edge node's configuration (every key is documented in docs/node.md;
//! `medfm node --print-config` prints the effective one).
//!
//! Unknown keys are refused (a typo must not silently fall back to a default), and so
//! are the keys of the node's contract this build does not act on yet, by name.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Keys of the node's contract (docs/node.md) that this build does not implement yet:
/// refused by name, so that an operator never believes a rule or a destination is active.
const NOT_YET: &[&str] = &[
    "series_idle_seconds",
    "http",
    "destination",
    "rule",
    "inbox",
];

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
    /// Largest instance accepted (MiB); larger ones are refused (A700, out of resources).
    pub max_instance_mb: u64,
    /// Disk quota of the spool (MiB); 0: none. An instance that would exceed it is
    /// refused (A700) and nothing is written.
    pub quota_mb: u64,
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
            max_instance_mb: 1024,
            quota_mb: 0,
        }
    }
}

impl Config {
    /// Read and check `path`; without a path, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the node configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("node configuration {}", path.display()))
    }

    /// Parse and check a configuration's text.
    pub fn parse(text: &str) -> Result<Config> {
        let table: toml::Table = toml::from_str(text)?;
        for key in NOT_YET {
            if table.contains_key(*key) {
                bail!(
                    "`{key}` is part of the node's contract but not implemented in this build \
                     (docs/node.md lists what is); remove it"
                );
            }
        }
        let config: Config = table.try_into()?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        check_ae_title(&self.ae_title).context("ae_title")?;
        for ae in &self.allowed_calling_aes {
            check_ae_title(ae).context("allowed_calling_aes")?;
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
        if self.association_timeout_seconds == 0 || self.idle_timeout_seconds == 0 {
            bail!("association_timeout_seconds and idle_timeout_seconds: at least 1");
        }
        if self.max_instance_mb == 0 {
            bail!("max_instance_mb: at least 1");
        }
        if self.spool.as_os_str().is_empty() {
            bail!("spool: a folder is needed");
        }
        Ok(())
    }

    /// The DICOM listener's address.
    pub fn dicom_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Largest instance in bytes.
    pub fn max_instance_bytes(&self) -> u64 {
        self.max_instance_mb << 20
    }

    /// Spool quota in bytes (None: no quota).
    pub fn quota_bytes(&self) -> Option<u64> {
        (self.quota_mb > 0).then_some(self.quota_mb << 20)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    pub fn association_timeout(&self) -> Duration {
        Duration::from_secs(self.association_timeout_seconds)
    }

    /// The configuration as TOML (`--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serialises")
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
    fn typos_bad_values_and_unimplemented_keys_are_refused() {
        let err = |t: &str| format!("{:#}", Config::parse(t).unwrap_err());
        assert!(err("ae_titel = \"X\"").contains("unknown field"));
        assert!(err("ae_title = \"MUCH_TOO_LONG_TITLE\"").contains("1 to 16"));
        assert!(err("ae_title = \"A\\\\B\"").contains("backslash"));
        assert!(err("allowed_calling_aes = [\" X\"]").contains("spaces"));
        assert!(err("port = 0").contains("not a port"));
        assert!(err("port = 70000").contains("port"));
        assert!(err("max_pdu = 10").contains("max_pdu"));
        assert!(err("[[rule]]\nmodality = \"MR\"").contains("not implemented"));
        assert!(err("bind = \"localhost\"").contains("bind"));
    }
}
