//! The one shell-quoting function: every remote command tether builds quotes
//! its arguments here, never with ad-hoc `format!`.

/// Quotes `s` as one word for a POSIX shell (`sh`, `bash`, `dash`, `zsh`).
///
/// The whole string goes inside single quotes, where a POSIX shell gives no
/// character a special meaning; a single quote itself is written as `'\''`
/// (close, escaped quote, reopen). The result is therefore safe for any
/// string, including the empty string, quotes, `$`, backslashes and newlines.
/// Strings are always quoted, even when they would not need it, so the output
/// is predictable and easy to review in logs. A NUL byte cannot be passed to a
/// program at all; `&str` values that contain one are passed through, and the
/// kernel rejects the command line.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
// Tests may panic, and run a real `sh` to prove the quoting.
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_types)]
mod tests {
    use super::quote;

    #[test]
    fn plain_words_are_wrapped_in_single_quotes() {
        assert_eq!(quote("hello"), "'hello'");
        assert_eq!(quote("/nix/store/abc-x"), "'/nix/store/abc-x'");
    }

    #[test]
    fn empty_string_stays_one_argument() {
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn single_quotes_are_closed_escaped_and_reopened() {
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("'"), "''\\'''");
    }

    #[test]
    fn shell_metacharacters_are_inert() {
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("a\nb"), "'a\nb'");
        assert_eq!(quote("a\\b\"c`d"), "'a\\b\"c`d'");
    }

    /// The real proof: `sh` hands back exactly the bytes we quoted.
    #[test]
    fn round_trips_through_a_real_shell() {
        let cases = [
            "",
            "plain",
            "with space",
            "it's",
            "''",
            "a\nb\n",
            "$HOME ${x} `id` $(id)",
            "back\\slash \"double\"",
            "-n",
            "*",
            "tab\there",
            "ünïcødé",
        ];
        for case in cases {
            let script = format!("printf %s {}", quote(case));
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("run /bin/sh");
            assert!(out.status.success(), "sh failed for {case:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                case,
                "script {script:?}"
            );
        }
    }
}
