//! Host keys for onboarding and for `tether hosts --check-keys`: reading
//! what `ssh-keygen -F` and `ssh-keyscan` print, choosing a host's key in
//! the order of trust (its configuration, the user's known_hosts, then a
//! scan that stays unverified), and comparing a pinned key with what the
//! host presents and what known_hosts says.

use super::DeclaredKey;
use crate::model::{HostKey, KeyType};

/// One key line of known_hosts or `ssh-keyscan` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub key: HostKey,
    /// The known_hosts line number, as `ssh-keygen -F` reports it.
    pub line: Option<u32>,
}

/// Where a pinned key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Declared in the host's NixOS configuration (the option's path).
    Configuration { option: String },
    /// The user's known_hosts: trust they already established.
    KnownHosts { file: String, line: Option<u32> },
}

/// The key found for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundKey {
    /// Trusted by the user already: written as `hostKey`.
    Pinned { key: HostKey, source: KeySource },
    /// Offered by whatever answered at the address: written commented out.
    Scanned { key: HostKey, from: String },
    /// Nothing found; what was tried.
    Missing { tried: Vec<String> },
}

/// Key types in the order a pin prefers them.
const PREFERENCE: [KeyType; 7] = [
    KeyType::Ed25519,
    KeyType::EcdsaP256,
    KeyType::EcdsaP384,
    KeyType::EcdsaP521,
    KeyType::Rsa,
    KeyType::SkEd25519,
    KeyType::SkEcdsaP256,
];

fn rank(t: KeyType) -> usize {
    PREFERENCE
        .iter()
        .position(|p| *p == t)
        .unwrap_or(PREFERENCE.len())
}

/// Parses known_hosts-format lines (`ssh-keygen -F` or `ssh-keyscan`
/// output): `HOSTS TYPE BASE64 [COMMENT]`, with `ssh-keygen -F`'s
/// `# Host … found: line N` comments giving line numbers. Revoked and CA
/// lines are skipped (neither is a host's own key), as are key types tether
/// does not pin.
pub fn parse_key_lines(text: &str) -> Vec<KeyLine> {
    let mut lines = Vec::new();
    let mut line_no = None;
    for raw in text.lines() {
        let raw = raw.trim();
        if let Some(comment) = raw.strip_prefix('#') {
            line_no = comment
                .rsplit_once("line ")
                .and_then(|(_, n)| n.trim().parse().ok());
            continue;
        }
        let fields: Vec<&str> = raw.split_whitespace().collect();
        if fields.len() < 3 || fields[0].starts_with('@') {
            continue;
        }
        if let Ok(key) = format!("{} {}", fields[1], fields[2]).parse::<HostKey>() {
            lines.push(KeyLine { key, line: line_no });
        }
    }
    lines
}

fn best(lines: &[KeyLine]) -> Option<&KeyLine> {
    lines.iter().min_by_key(|l| rank(l.key.key_type()))
}

impl FoundKey {
    /// A key the host's configuration declares for its name or address.
    pub fn from_declared(name: &str, address: &str, declared: &[DeclaredKey]) -> Option<FoundKey> {
        declared
            .iter()
            .filter(|d| d.names.iter().any(|n| n == name || n == address))
            .filter_map(|d| {
                let key = d.public_key.as_deref()?.parse::<HostKey>().ok()?;
                Some((key, d.option.clone()))
            })
            .min_by_key(|(key, _)| rank(key.key_type()))
            .map(|(key, option)| FoundKey::Pinned {
                key,
                source: KeySource::Configuration { option },
            })
    }

    /// The preferred key of the first known_hosts file that knows the host.
    pub fn from_known_hosts(files: &[(String, Vec<KeyLine>)]) -> Option<FoundKey> {
        files.iter().find_map(|(file, lines)| {
            best(lines).map(|l| FoundKey::Pinned {
                key: l.key.clone(),
                source: KeySource::KnownHosts {
                    file: file.clone(),
                    line: l.line,
                },
            })
        })
    }

    /// The preferred key of a scan of `from`.
    pub fn from_scan(from: &str, lines: &[KeyLine]) -> Option<FoundKey> {
        best(lines).map(|l| FoundKey::Scanned {
            key: l.key.clone(),
            from: from.to_string(),
        })
    }
}

/// Picks a host's key in the order of trust: its configuration, then the
/// known_hosts files in order, then the scan (`None`: not scanned).
pub fn choose_key(
    name: &str,
    address: &str,
    declared: &[DeclaredKey],
    known_hosts: &[(String, Vec<KeyLine>)],
    scan: Option<(&str, &[KeyLine])>,
) -> FoundKey {
    FoundKey::from_declared(name, address, declared)
        .or_else(|| FoundKey::from_known_hosts(known_hosts))
        .or_else(|| scan.and_then(|(from, lines)| FoundKey::from_scan(from, lines)))
        .unwrap_or_else(|| {
            let mut tried = vec!["the configuration's services.openssh.knownHosts".to_string()];
            tried.extend(known_hosts.iter().map(|(f, _)| f.clone()));
            if let Some((from, _)) = scan {
                tried.push(format!("ssh-keyscan {from}"));
            }
            FoundKey::Missing { tried }
        })
}

/// What `tether hosts --check-keys` found for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub host: PresentedKey,
    /// known_hosts entries of the pinned key's type that hold another key:
    /// file, line and fingerprint.
    pub known_hosts_disagree: Vec<(String, Option<u32>, String)>,
}

/// The pinned key against what the host presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedKey {
    Same,
    /// The host presents another key of the pinned type: its fingerprint.
    Different {
        presented: String,
    },
    /// The host answered but offered no key of the pinned type.
    NoneOfThatType,
    /// The scan got no answer.
    Unreachable {
        why: String,
    },
}

impl KeyCheck {
    /// Pinned, presented and known_hosts all agree.
    pub fn agrees(&self) -> bool {
        self.host == PresentedKey::Same && self.known_hosts_disagree.is_empty()
    }
}

/// Compares `pinned` with the keys the host presented (`Err`: the scan
/// failed) and with the user's known_hosts entries for it.
pub fn check_keys(
    pinned: &HostKey,
    presented: Result<&[KeyLine], &str>,
    known_hosts: &[(String, Vec<KeyLine>)],
) -> KeyCheck {
    let same_type = |l: &&KeyLine| l.key.key_type() == pinned.key_type();
    let host = match presented {
        Err(why) => PresentedKey::Unreachable {
            why: why.to_string(),
        },
        Ok(lines) => {
            let of_type: Vec<&KeyLine> = lines.iter().filter(same_type).collect();
            if of_type
                .iter()
                .any(|l| l.key.fingerprint() == pinned.fingerprint())
            {
                PresentedKey::Same
            } else if let Some(other) = of_type.first() {
                PresentedKey::Different {
                    presented: other.key.fingerprint(),
                }
            } else {
                PresentedKey::NoneOfThatType
            }
        }
    };
    let known_hosts_disagree = known_hosts
        .iter()
        .flat_map(|(file, lines)| {
            lines
                .iter()
                .filter(same_type)
                .filter(|l| l.key.fingerprint() != pinned.fingerprint())
                .map(move |l| (file.clone(), l.line, l.key.fingerprint()))
        })
        .collect();
    KeyCheck {
        host,
        known_hosts_disagree,
    }
}
