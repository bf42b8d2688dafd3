//! Running tether's scripts as root through sudo (docs/sudo.md): the
//! command the remote login shell runs, what goes on the session's stdin
//! before the script, and what sudo's refusals mean.
//!
//! The script still travels on stdin (it holds the deploy's token, which
//! must not be in any process's arguments). With a password, stdin is
//! `PASSWORD \n MARK \n SCRIPT`: `sudo -S` reads its password one byte at a
//! time up to the line break, and the root shell then skips lines up to
//! [`SCRIPT_MARK`], so that a sudoers rule that asks no password (and so
//! reads nothing) cannot make the shell run the password as a command. `-k`
//! ignores cached credentials, so sudo asks every time it should.

use std::fmt;

use serde::Serialize;

use crate::model::{SudoMode, SudoPassword};
use crate::shell::quote;

/// The line that separates a sudo password from the script on stdin.
pub const SCRIPT_MARK: &str = "--tether-script-follows--";

/// The root shell that reads the script from stdin (see `ssh.rs`: `$(cat)`
/// reads it whole first, so commands in it see an exhausted stdin).
const EVAL_STDIN: &str = r#"eval "$(cat)""#;

/// Skips stdin up to and including [`SCRIPT_MARK`] (builtin `read` takes
/// one byte at a time from a pipe, so what follows stays on stdin).
fn skip_to_mark() -> String {
    format!(
        "while IFS= read -r l; do [ \"$l\" = {} ] && break; done; ",
        quote(SCRIPT_MARK)
    )
}

/// How one session becomes root (its `Debug` hides the password, as
/// [`SudoPassword`]'s does).
#[derive(Debug, Clone)]
pub struct Elevation {
    pub mode: SudoMode,
    pub password: Option<SudoPassword>,
}

impl Elevation {
    pub const NONE: Elevation = Elevation {
        mode: SudoMode::None,
        password: None,
    };

    fn sudo(&self) -> Option<&'static str> {
        match (self.mode, &self.password) {
            (SudoMode::None, _) => None,
            (SudoMode::Password, Some(_)) => Some("sudo -S -k -p '' --"),
            // Without a password sudo must not wait for one: it fails at
            // once, and the preflight names the fix.
            (SudoMode::Password, None) | (SudoMode::Passwordless, _) => Some("sudo -n --"),
        }
    }

    fn with_password(&self) -> Option<&SudoPassword> {
        match self.mode {
            SudoMode::Password => self.password.as_ref(),
            _ => None,
        }
    }

    /// The remote command for a script sent on stdin.
    pub fn command_for_stdin_script(&self) -> String {
        let inner = match self.with_password() {
            Some(_) => format!("{}{EVAL_STDIN}", skip_to_mark()),
            None => EVAL_STDIN.to_string(),
        };
        self.wrap(&inner)
    }

    /// The remote command for `script` given as the command itself (its
    /// stdin is a data stream; only scripts without secrets).
    pub fn command_for_argv_script(&self, script: &str) -> String {
        let inner = match self.with_password() {
            Some(_) => format!("{}{script}", skip_to_mark()),
            None => script.to_string(),
        };
        self.wrap(&inner)
    }

    fn wrap(&self, inner: &str) -> String {
        match self.sudo() {
            Some(sudo) => format!("{sudo} sh -c {}", quote(inner)),
            None => format!("sh -c {}", quote(inner)),
        }
    }

    /// What goes on stdin before the script or stream: the password and
    /// the mark, or nothing.
    pub fn stdin_prefix(&self) -> Option<String> {
        self.with_password()
            .map(|p| format!("{}\n{SCRIPT_MARK}\n", p.expose()))
    }

    pub fn uses_sudo(&self) -> bool {
        self.sudo().is_some()
    }
}

/// Why sudo would not run tether's script; nothing ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SudoFailure {
    /// sudo wants a password and none was given.
    PasswordRequired,
    /// sudo refused the password.
    WrongPassword,
    /// sudoers does not let the user run commands as root.
    NotAllowed,
    /// The host has no sudo.
    NoSudo,
}

impl SudoFailure {
    /// Reads a session's stderr when its script did not run.
    pub fn from_stderr(stderr: &str) -> Option<SudoFailure> {
        let has = |s: &str| stderr.contains(s);
        if has("incorrect password attempt") || has("Sorry, try again") {
            Some(SudoFailure::WrongPassword)
        } else if has("sudo: a password is required") || has("no password was provided") {
            Some(SudoFailure::PasswordRequired)
        } else if has("is not in the sudoers file")
            || has("is not allowed to execute")
            || has("may not run sudo")
        {
            Some(SudoFailure::NotAllowed)
        } else if has("sudo: not found") || has("sudo: command not found") {
            Some(SudoFailure::NoSudo)
        } else {
            None
        }
    }
}

impl fmt::Display for SudoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SudoFailure::PasswordRequired => {
                "sudo asks for a password (either the user's rule needs one, or the user has no sudo rule at all: `sudo -n` cannot tell which): set `sudo = \"password\"` and pass --ask-sudo-password, or allow the user NOPASSWD in sudoers"
            }
            SudoFailure::WrongPassword => {
                "sudo refused the password given with --ask-sudo-password"
            }
            SudoFailure::NotAllowed => {
                "sudoers does not let the SSH user run commands as root: add a rule for it (e.g. security.sudo.extraRules on NixOS), or deploy as root"
            }
            SudoFailure::NoSudo => "the host has no sudo command",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_password_goes_on_stdin_before_the_mark_never_in_the_command() {
        let e = Elevation {
            mode: SudoMode::Password,
            password: SudoPassword::new("s3cr'et $x"),
        };
        let command = e.command_for_stdin_script();
        assert!(!command.contains("s3cr"), "{command}");
        assert!(
            command.starts_with("sudo -S -k -p '' -- sh -c "),
            "{command}"
        );
        assert_eq!(
            e.stdin_prefix().unwrap(),
            format!("s3cr'et $x\n{SCRIPT_MARK}\n")
        );
        let argv = e.command_for_argv_script("exec btrfs receive /x");
        assert!(!argv.contains("s3cr") && argv.contains("btrfs receive"));
    }

    #[test]
    fn passwordless_and_root_sessions_have_no_prefix() {
        let none = Elevation::NONE;
        assert_eq!(none.command_for_stdin_script(), r#"sh -c 'eval "$(cat)"'"#);
        assert_eq!(none.stdin_prefix(), None);
        let nopasswd = Elevation {
            mode: SudoMode::Passwordless,
            password: SudoPassword::new("unused"),
        };
        assert!(nopasswd
            .command_for_stdin_script()
            .starts_with("sudo -n -- sh -c "));
        assert_eq!(nopasswd.stdin_prefix(), None);
        // Password mode without a password fails at once instead of waiting.
        let missing = Elevation {
            mode: SudoMode::Password,
            password: None,
        };
        assert!(missing.command_for_stdin_script().starts_with("sudo -n "));
    }

    #[test]
    fn sudo_refusals_are_told_apart() {
        let f = SudoFailure::from_stderr;
        assert_eq!(
            f("sudo: a password is required\n"),
            Some(SudoFailure::PasswordRequired)
        );
        assert_eq!(
            f("Sorry, try again.\nsudo: 3 incorrect password attempts\n"),
            Some(SudoFailure::WrongPassword)
        );
        assert_eq!(
            f("deploy is not in the sudoers file.  This incident will be reported.\n"),
            Some(SudoFailure::NotAllowed)
        );
        assert_eq!(f("sh: 1: sudo: not found\n"), Some(SudoFailure::NoSudo));
        assert_eq!(f("something else"), None);
    }
}
