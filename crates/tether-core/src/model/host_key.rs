//! Pinned SSH host keys: parsed and checked when the inventory is read, so a
//! typo is an inventory error and not a failed connection mid-deploy.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The public key algorithms OpenSSH offers for host keys. Certificates and
/// DSA (removed from OpenSSH) are deliberately absent: a pin is a plain key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    Ed25519,
    Rsa,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    SkEd25519,
    SkEcdsaP256,
}

impl KeyType {
    pub const ALL: [KeyType; 7] = [
        KeyType::Ed25519,
        KeyType::Rsa,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::SkEd25519,
        KeyType::SkEcdsaP256,
    ];

    /// The name OpenSSH writes in key files and `known_hosts`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::Rsa => "ssh-rsa",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyType::SkEd25519 => "sk-ssh-ed25519@openssh.com",
            KeyType::SkEcdsaP256 => "sk-ecdsa-sha2-nistp256@openssh.com",
        }
    }

    /// A short name for tables (`ed25519`, `rsa`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::EcdsaP521 => "ecdsa-p521",
            KeyType::SkEd25519 => "sk-ed25519",
            KeyType::SkEcdsaP256 => "sk-ecdsa-p256",
        }
    }

    fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a usable host key. Messages follow "not a valid
/// OpenSSH public key (...)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error("empty")]
    Empty,
    #[error("expected \"TYPE BASE64 [COMMENT]\"")]
    MissingBlob,
    #[error("this looks like a known_hosts line; drop the leading {0:?}")]
    KnownHostsLine(String),
    #[error("unknown key type {0:?}; expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com")]
    UnknownType(String),
    #[error("base64 does not decode")]
    BadBase64,
    #[error("key data is truncated")]
    Truncated,
    #[error("key data says {embedded:?} but the key is written as {written:?}")]
    TypeMismatch { written: String, embedded: String },
    #[error("an ssh-ed25519 key must be 32 bytes, found {0}")]
    BadEd25519Length(usize),
}

/// A pinned OpenSSH public host key, e.g. `ssh-ed25519 AAAAC3Nz... root@web1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    key_type: KeyType,
    /// The decoded wire-format key blob.
    blob: Vec<u8>,
    comment: Option<String>,
}

impl HostKey {
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The key as OpenSSH writes it, without the comment: `TYPE BASE64`.
    /// This is what goes into a `known_hosts` file.
    pub fn openssh(&self) -> String {
        format!("{} {}", self.key_type, STANDARD.encode(&self.blob))
    }

    /// The fingerprint `ssh-keygen -l` prints: `SHA256:` and unpadded base64.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.blob);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(digest))
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.openssh())
    }
}

impl FromStr for HostKey {
    type Err = HostKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let written = words.next().ok_or(HostKeyError::Empty)?;
        let Some(key_type) = KeyType::from_name(written) else {
            // `ssh-keyscan` prints `host TYPE KEY`: a common paste.
            if let Some(second) = s.split_whitespace().nth(1) {
                if KeyType::from_name(second).is_some() {
                    return Err(HostKeyError::KnownHostsLine(written.to_owned()));
                }
            }
            return Err(HostKeyError::UnknownType(written.to_owned()));
        };
        let encoded = words.next().ok_or(HostKeyError::MissingBlob)?;
        let rest: Vec<&str> = words.collect();
        let comment = (!rest.is_empty()).then(|| rest.join(" "));
        let blob = STANDARD
            .decode(encoded)
            .map_err(|_| HostKeyError::BadBase64)?;
        let (embedded, after) = read_string(&blob).ok_or(HostKeyError::Truncated)?;
        if embedded != written.as_bytes() {
            return Err(HostKeyError::TypeMismatch {
                written: written.to_owned(),
                embedded: String::from_utf8_lossy(embedded).into_owned(),
            });
        }
        if key_type == KeyType::Ed25519 {
            let (key, _) = read_string(after).ok_or(HostKeyError::Truncated)?;
            if key.len() != 32 {
                return Err(HostKeyError::BadEd25519Length(key.len()));
            }
        }
        Ok(HostKey {
            key_type,
            blob,
            comment,
        })
    }
}

/// Reads one SSH wire-format string (u32 big-endian length, then bytes).
fn read_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let body = data.get(4..4 + len)?;
    Some((body, &data[4 + len..]))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
pub(crate) mod tests {
    use super::*;

    /// Builds a syntactically valid key of the given type for tests.
    pub(crate) fn key_line(type_name: &str, embedded: &str, key: &[u8]) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&(embedded.len() as u32).to_be_bytes());
        blob.extend_from_slice(embedded.as_bytes());
        blob.extend_from_slice(&(key.len() as u32).to_be_bytes());
        blob.extend_from_slice(key);
        format!("{type_name} {}", STANDARD.encode(blob))
    }

    pub(crate) fn ed25519(seed: u8) -> String {
        key_line("ssh-ed25519", "ssh-ed25519", &[seed; 32])
    }

    #[test]
    fn parses_ed25519_with_comment() {
        let line = format!("{} root@web1 extra", ed25519(7));
        let key: HostKey = line.parse().expect("valid key");
        assert_eq!(key.key_type(), KeyType::Ed25519);
        assert_eq!(key.comment(), Some("root@web1 extra"));
        assert_eq!(key.openssh(), ed25519(7));
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert!(!key.fingerprint().ends_with('='));
    }

    /// A real key produced by `ssh-keygen -t ed25519`, checked against the
    /// fingerprint `ssh-keygen -lf` printed for it.
    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let key: HostKey =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA8IZWhH2o1KHCwjWzLA97IHnuk5FMFXEHyWO+azYrIR"
                .parse()
                .expect("valid key");
        assert_eq!(
            key.fingerprint(),
            "SHA256:2KrqTXNCXDy5HYEH2bQBPJuM9YGa74jk8GQtcADolkY"
        );
    }

    #[test]
    fn rejects_unknown_type() {
        assert_eq!(
            "ssh-foo AAAA".parse::<HostKey>(),
            Err(HostKeyError::UnknownType("ssh-foo".into()))
        );
    }

    #[test]
    fn rejects_bad_base64() {
        assert_eq!(
            "ssh-ed25519 not*base64".parse::<HostKey>(),
            Err(HostKeyError::BadBase64)
        );
    }

    #[test]
    fn rejects_embedded_type_differing_from_prefix() {
        let line = key_line("ssh-rsa", "ssh-ed25519", &[1; 32]);
        assert_eq!(
            line.parse::<HostKey>(),
            Err(HostKeyError::TypeMismatch {
                written: "ssh-rsa".into(),
                embedded: "ssh-ed25519".into()
            })
        );
    }

    #[test]
    fn rejects_missing_blob_and_empty() {
        assert_eq!(
            "ssh-ed25519".parse::<HostKey>(),
            Err(HostKeyError::MissingBlob)
        );
        assert_eq!("  ".parse::<HostKey>(), Err(HostKeyError::Empty));
    }

    #[test]
    fn rejects_truncated_and_short_ed25519() {
        assert_eq!(
            "ssh-ed25519 AAAA".parse::<HostKey>(),
            Err(HostKeyError::Truncated)
        );
        let short = key_line("ssh-ed25519", "ssh-ed25519", &[1; 31]);
        assert_eq!(
            short.parse::<HostKey>(),
            Err(HostKeyError::BadEd25519Length(31))
        );
    }

    #[test]
    fn recognises_a_pasted_known_hosts_line() {
        let line = format!("web1 {}", ed25519(1));
        assert_eq!(
            line.parse::<HostKey>(),
            Err(HostKeyError::KnownHostsLine("web1".into()))
        );
    }
}
