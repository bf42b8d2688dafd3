//! Why a value is not a valid host name, tag, address, user or machine-id.
//! Messages are phrased to follow `field "x": ` in inventory errors.

/// A value that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not a valid host name (use letters, digits, '.', '_' and '-', starting with a letter or digit)")]
    InvalidHostName(String),
    #[error("{value:?} is not a valid address: {reason}")]
    InvalidAddress { value: String, reason: &'static str },
    #[error("{value:?} is not a valid SSH user: {reason}")]
    InvalidUser { value: String, reason: &'static str },
    #[error("{0:?} is not a valid machine-id (expected 32 lowercase hexadecimal digits, as in /etc/machine-id)")]
    InvalidMachineId(String),
    #[error("{0:?} is not a valid tag (use letters, digits, '.', '_' and '-', starting with a letter or digit)")]
    InvalidTag(String),
    #[error("{value:?} is not a valid state subvolume path: {reason}")]
    InvalidStatePath { value: String, reason: &'static str },
    #[error("{value:?} is not a valid ZFS dataset: {reason}")]
    InvalidDataset { value: String, reason: &'static str },
    #[error("{0:?} is not a systemd unit name (letters, digits, ':', '_', '.', '@', '-', '\\', ending in .service, .socket, .target, .mount, .timer, …)")]
    InvalidUnitName(String),
}
