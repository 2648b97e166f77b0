//! The part of a VM's configuration the `proxmox_vm` step manages, and how it
//! compares with what Proxmox reports: defaults for missing keys, `memory`
//! in either of its spellings, `sshkeys` compared decoded (the server keeps
//! it percent-encoded), and the guest agent, which the step always enables.

use super::pve::int;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

/// What `encodeURIComponent` leaves alone, less `!*'()`: the server's
/// `urlencoded` format accepts the result, and spaces become `%20`.
const SSHKEYS_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode `sshkeys` as Proxmox expects it (the form encoding then applies on top).
pub fn encode_sshkeys(keys: &str) -> String {
    utf8_percent_encode(keys, SSHKEYS_SET).to_string()
}

/// Keys one per line, trimmed, blank lines dropped.
pub fn normalize_keys(keys: &str) -> String {
    keys.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The settings the workflow asks for; `None` leaves the template's value alone.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub cores: Option<i64>,
    pub memory: Option<i64>,
    pub ciuser: Option<String>,
    /// Decoded, normalized.
    pub sshkeys: Option<String>,
    pub ipconfig0: Option<String>,
}

/// One setting to change: shown as `set KEY OLD -> NEW`, sent as `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub old: Option<String>,
    pub new: String,
    /// The value as sent in the form.
    pub wire: String,
}

impl Change {
    pub fn describe(&self) -> String {
        match (self.key, &self.old) {
            ("agent", _) => "enable the qemu guest agent".to_owned(),
            ("sshkeys", Some(_)) => format!("replace sshkeys ({})", key_count(&self.new)),
            ("sshkeys", None) => format!("set sshkeys ({})", key_count(&self.new)),
            (k, Some(old)) => format!("set {k} {old} -> {}", self.new),
            (k, None) => format!("set {k} {}", self.new),
        }
    }
}

fn key_count(keys: &str) -> String {
    match keys.lines().count() {
        1 => "1 key".to_owned(),
        n => format!("{n} keys"),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `memory` is an integer, or (newer servers) a property string `[current=]N[,...]`.
fn memory(v: &Value) -> Option<i64> {
    int(v).or_else(|| {
        let s = v.as_str()?;
        s.split(',')
            .find_map(|part| {
                part.strip_prefix("current=")
                    .or(Some(part).filter(|p| !p.contains('=')))
            })
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Whether the `agent` option enables the guest agent.
pub fn agent_enabled(config: &Map<String, Value>) -> bool {
    config
        .get("agent")
        .and_then(text)
        .is_some_and(|a| a.split(',').any(|p| p == "1" || p == "enabled=1"))
}

/// What must change in `config` to match `want` (the agent included).
pub fn changes(want: &Desired, config: &Map<String, Value>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut num = |key: &'static str, want: Option<i64>, have: Option<i64>| {
        if let Some(w) = want {
            if have != Some(w) {
                out.push(Change {
                    key,
                    old: have.map(|h| h.to_string()),
                    new: w.to_string(),
                    wire: w.to_string(),
                });
            }
        }
    };
    // Proxmox's defaults when the key is absent.
    num("cores", want.cores, config.get("cores").map_or(Some(1), int));
    num("memory", want.memory, config.get("memory").map_or(Some(512), memory));
    for (key, w) in [("ciuser", &want.ciuser), ("ipconfig0", &want.ipconfig0)] {
        if let Some(w) = w {
            let have = config.get(key).and_then(text);
            if have.as_deref() != Some(w.as_str()) {
                out.push(Change {
                    key,
                    old: have,
                    new: w.clone(),
                    wire: w.clone(),
                });
            }
        }
    }
    if let Some(w) = &want.sshkeys {
        let have = config
            .get("sshkeys")
            .and_then(text)
            .map(|s| normalize_keys(&percent_decode_str(&s).decode_utf8_lossy()));
        if have.as_deref() != Some(w.as_str()) {
            out.push(Change {
                key: "sshkeys",
                old: have,
                new: w.clone(),
                wire: encode_sshkeys(w),
            });
        }
    }
    if !agent_enabled(config) {
        out.push(Change {
            key: "agent",
            old: config.get("agent").and_then(text),
            new: "1".into(),
            wire: "1".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sshkeys_are_encoded_with_percent_20() {
        let enc = encode_sshkeys("ssh-ed25519 AAAAC3Nz+a/b= me@host:1\nssh-rsa AAAAB3");
        assert_eq!(
            enc,
            "ssh-ed25519%20AAAAC3Nz%2Ba%2Fb%3D%20me%40host%3A1%0Assh-rsa%20AAAAB3"
        );
        assert!(enc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c)));
    }

    #[test]
    fn compares_with_defaults_and_decoded_keys() {
        let want = Desired {
            cores: Some(2),
            memory: Some(2048),
            sshkeys: Some("ssh-ed25519 AAAA me".into()),
            ..Desired::default()
        };
        let config = json!({"cores": 2, "memory": "2048", "sshkeys": "ssh-ed25519%20AAAA%20me%0A", "agent": "1"});
        assert!(changes(&want, config.as_object().unwrap()).is_empty());
        let config = json!({"memory": "current=1024,balloon=512"});
        let c = changes(&want, config.as_object().unwrap());
        let described: Vec<String> = c.iter().map(Change::describe).collect();
        assert_eq!(
            described,
            [
                "set cores 1 -> 2",
                "set memory 1024 -> 2048",
                "set sshkeys (1 key)",
                "enable the qemu guest agent"
            ]
        );
    }
}
