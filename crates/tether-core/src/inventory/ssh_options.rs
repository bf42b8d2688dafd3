//! Which `sshOptions` the inventory accepts. tether's guarantees rest on a
//! few SSH settings it forces (its own known-hosts file with the pinned key
//! only, no host keys from DNS or a command, strict checking, no
//! multiplexing on the confirmation, a script on standard input and no
//! terminal); an option that would undo one, or break the session tether
//! runs, is rejected when the inventory is read. Everything else passes
//! (`ProxyJump`, `ProxyCommand`, `IdentityFile`, …): the inventory is code
//! the deployer runs, and ssh's own configuration applies as usual.

use std::fmt;

/// Flags without an argument that tether accepts.
const PLAIN_FLAGS: &str = "46AaCgKkqvXxYy";
/// Flags with an argument that tether accepts (`-o` is checked apart).
const ARG_FLAGS: &str = "BbcDEeIiJLmPRw";

/// Why a flag breaks what tether does.
fn forbidden_flag(flag: char) -> Option<&'static str> {
    Some(match flag {
        'F' => "replaces ssh's configuration; configure ssh the usual way instead",
        'S' | 'M' | 'O' => "controls connection multiplexing, which tether manages itself",
        'l' => "sets the user; use the host's sshUser",
        'p' => "sets the port; use the host's sshPort",
        'n' => "closes the session's standard input, on which tether sends its scripts",
        'N' | 's' | 'W' => "runs no command, so tether's scripts could not run",
        'f' => "sends ssh to the background, where tether cannot follow the session",
        'T' | 't' => "changes terminal allocation, which tether's sessions rely on",
        'G' | 'V' => "makes ssh print and exit instead of connecting",
        _ => return None,
    })
}

/// `-o` keys (lowercase) that would weaken a guarantee or break a session,
/// and why.
fn forbidden_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "knownhostscommand" | "verifyhostkeydns" | "globalknownhostsfile"
        | "userknownhostsfile" | "stricthostkeychecking" | "hostkeyalias" | "checkhostip"
        | "updatehostkeys" => "would let ssh accept a host key other than the pinned one",
        "controlmaster" | "controlpath" | "controlpersist" => {
            "controls connection multiplexing: the confirmation must travel over a brand-new connection"
        }
        "batchmode" => "tether never waits for a prompt",
        "user" => "sets the user; use the host's sshUser",
        "port" => "sets the port; use the host's sshPort",
        "remotecommand" | "sessiontype" => "replaces the command tether runs",
        "stdinnull" => "closes the session's standard input, on which tether sends its scripts",
        "forkafterauthentication" => {
            "sends ssh to the background, where tether cannot follow the session"
        }
        "requesttty" => "changes terminal allocation, which tether's sessions rely on",
        _ => return None,
    })
}

/// An `sshOptions` entry tether does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshOptionProblem {
    /// Not an ssh option (`-x…`) where one is expected.
    NotAnOption(String),
    UnknownFlag(char),
    Forbidden {
        option: String,
        why: &'static str,
    },
    /// A flag that takes a value is last.
    MissingValue(String),
    /// `-o` without `Key=Value`.
    BadKeyValue(String),
}

impl fmt::Display for SshOptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshOptionProblem::NotAnOption(s) => write!(
                f,
                "{s:?} is not an ssh option (options start with '-'; a value follows its flag, as \"-i\" \"/path/key\")"
            ),
            SshOptionProblem::UnknownFlag(c) => write!(f, "-{c} is not an ssh flag tether knows"),
            SshOptionProblem::Forbidden { option, why } => {
                write!(f, "{option} is not allowed: it {why}")
            }
            SshOptionProblem::MissingValue(flag) => write!(f, "{flag} needs a value after it"),
            SshOptionProblem::BadKeyValue(s) => {
                write!(f, "{s:?} is not Key=Value (as in \"-o\" \"ProxyJump=bastion\")")
            }
        }
    }
}

/// Checks the entries of `sshOptions`; the error names the entry's index.
pub fn validate(options: &[String]) -> Result<(), (usize, SshOptionProblem)> {
    let mut i = 0;
    while i < options.len() {
        let entry = &options[i];
        let Some(flags) = entry.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err((i, SshOptionProblem::NotAnOption(entry.clone())));
        };
        for (at, flag) in flags.char_indices() {
            if let Some(why) = forbidden_flag(flag) {
                return Err((
                    i,
                    SshOptionProblem::Forbidden {
                        option: format!("-{flag}"),
                        why,
                    },
                ));
            }
            if PLAIN_FLAGS.contains(flag) {
                continue;
            }
            if !ARG_FLAGS.contains(flag) && flag != 'o' {
                return Err((i, SshOptionProblem::UnknownFlag(flag)));
            }
            // The value is the rest of this entry, or the next entry.
            let attached = &flags[at + flag.len_utf8()..];
            let (value, at_index) = if attached.is_empty() {
                i += 1;
                match options.get(i) {
                    Some(v) => (v.as_str(), i),
                    None => {
                        return Err((i - 1, SshOptionProblem::MissingValue(format!("-{flag}"))))
                    }
                }
            } else {
                (attached, i)
            };
            if flag == 'o' {
                check_key_value(value).map_err(|p| (at_index, p))?;
            }
            break;
        }
        i += 1;
    }
    Ok(())
}

fn check_key_value(value: &str) -> Result<(), SshOptionProblem> {
    let Some((key, _)) = value.split_once('=').filter(|(k, _)| !k.is_empty()) else {
        return Err(SshOptionProblem::BadKeyValue(value.to_string()));
    };
    match forbidden_key(&key.to_ascii_lowercase()) {
        Some(why) => Err(SshOptionProblem::Forbidden {
            option: key.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(options: &[&str]) -> Result<(), (usize, SshOptionProblem)> {
        validate(&options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ordinary_options_pass() {
        for ok in [
            &["-i", "/root/.ssh/deploy"][..],
            &["-J", "bastion.example.org", "-C"],
            &["-o", "ProxyJump=bastion"],
            &["-oProxyCommand=nc"],
            &["-vvv", "-4"],
            &["-ikey"],
            &["-o", "ServerAliveInterval=10"],
            &[],
        ] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn options_that_weaken_the_pinned_key_or_the_fresh_confirmation_are_refused() {
        for (bad, at) in [
            (&["-o", "KnownHostsCommand=/bin/echo"][..], 1),
            (&["-oVerifyHostKeyDNS=yes"], 0),
            (&["-o", "globalknownhostsfile=/etc/ssh/ssh_known_hosts"], 1),
            (&["-o", "StrictHostKeyChecking=no"], 1),
            (&["-o", "ControlMaster=auto"], 1),
            (&["-o", "ControlPath=/tmp/cm"], 1),
            (&["-C", "-S", "/tmp/cm"], 1),
            (&["-M"], 0),
            (&["-F", "/etc/other"], 0),
            (&["-n"], 0),
            (&["-t"], 0),
            (&["-o", "RemoteCommand=true"], 1),
        ] {
            match check(bad) {
                Err((i, SshOptionProblem::Forbidden { .. })) => assert_eq!(i, at, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_options_are_named() {
        assert_eq!(
            check(&["ProxyJump=bastion"]),
            Err((0, SshOptionProblem::NotAnOption("ProxyJump=bastion".into())))
        );
        assert_eq!(
            check(&["-i"]),
            Err((0, SshOptionProblem::MissingValue("-i".into())))
        );
        assert_eq!(
            check(&["-o", "ProxyJump"]),
            Err((1, SshOptionProblem::BadKeyValue("ProxyJump".into())))
        );
        assert_eq!(check(&["-Z"]), Err((0, SshOptionProblem::UnknownFlag('Z'))));
    }
}
