//! How tether becomes root on a host whose SSH user is not root
//! (inventory `sudo`, docs/sudo.md), and the sudo password, which is held
//! in memory only and can never be printed by accident.

use std::sync::Arc;

/// The inventory's `sudo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SudoMode {
    /// Scripts run as the SSH user (root).
    None,
    /// `sudo -n`: sudoers lets the user run anything without a password.
    Passwordless,
    /// `sudo -S`: the password given with `--ask-sudo-password`, on stdin.
    Password,
}

impl SudoMode {
    pub const NAMES: &'static str = "\"none\", \"passwordless\", \"password\"";

    /// The default for an SSH user: none for root, passwordless otherwise.
    pub fn default_for(ssh_user: &str) -> SudoMode {
        if ssh_user == "root" {
            SudoMode::None
        } else {
            SudoMode::Passwordless
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SudoMode::None => "none",
            SudoMode::Passwordless => "passwordless",
            SudoMode::Password => "password",
        }
    }
}

impl std::str::FromStr for SudoMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "none" => Ok(SudoMode::None),
            "passwordless" => Ok(SudoMode::Passwordless),
            "password" => Ok(SudoMode::Password),
            _ => Err(()),
        }
    }
}

/// A sudo password. No `Display`, no `Serialize`, a `Debug` that hides it:
/// it reaches a host only as the first line of an SSH session's stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct SudoPassword(Arc<str>);

impl SudoPassword {
    /// A password sudo can read as one line: not empty, no line break, no
    /// NUL.
    pub fn new(password: &str) -> Option<SudoPassword> {
        let ok = !password.is_empty() && !password.contains(['\n', '\r', '\0']);
        ok.then(|| SudoPassword(Arc::from(password)))
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SudoPassword(hidden)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let p = SudoPassword::new("hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(SudoPassword::new("two\nlines").is_none());
        assert!(SudoPassword::new("").is_none());
    }

    #[test]
    fn root_needs_no_sudo_and_others_default_to_passwordless() {
        assert_eq!(SudoMode::default_for("root"), SudoMode::None);
        assert_eq!(SudoMode::default_for("deploy"), SudoMode::Passwordless);
        assert_eq!("password".parse(), Ok(SudoMode::Password));
        assert!("yes".parse::<SudoMode>().is_err());
    }
}
