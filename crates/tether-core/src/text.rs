//! Small text helpers shared by every layer: the tail of a command's
//! stderr for a reason, a one-line excerpt, store paths shortened for
//! tables, and "did you mean" suggestions. Written once here so that every
//! message cuts and cleans text the same way.

/// The last `max_lines` non-empty lines of `s`, trimmed, joined with ` | `:
/// what a reason quotes of a command's stderr.
pub fn tail(s: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(max_lines)..].join(" | ")
}

/// At most `max` characters of `s`, on one line (control characters become
/// spaces), for a reason or an event.
pub fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.chars().count() <= max {
        trimmed.to_string()
    } else {
        let cut: String = trimmed.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// `s` with tabs, newlines and other control characters replaced by
/// spaces: safe as one field of a tab-separated journal line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `url` fit to print: a password becomes `***` (a user name alone too: a
/// token often travels as `https://TOKEN@host`), and so does the value of
/// every query parameter (tokens travel there). Check URLs end up in
/// events, the deployer's journal and the target's journal.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    // Both only fail for URLs that cannot have credentials at all.
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    } else if !parsed.username().is_empty() {
        let _ = parsed.set_username("***");
    }
    if parsed.query().is_some() {
        let keys: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let redacted: Vec<String> = keys.iter().map(|k| format!("{k}=***")).collect();
        parsed.set_query(Some(&redacted.join("&")));
    }
    parsed.to_string()
}

/// A store path shortened for tables, keeping 7 characters of its hash:
/// systems of one host often share their name (`nixos-system-web1-24.05`)
/// and differ only there. `/nix/store/0123456…-nixos-system-web1-24.05`
/// becomes `0123456-nixos-system-web1-24.05`.
pub fn short_store_path(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 && hash.is_ascii() && !name.is_empty() => {
            format!("{}-{name}", &hash[..7])
        }
        _ => base.to_string(),
    }
}

/// Closest candidate to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word_lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Optimal-string-alignment distance: Levenshtein plus swapping two
/// neighbouring characters as one edit, the most common typo (`wbe2`).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\n b \nc\n", 2), "b | c");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn excerpts_are_one_line_and_cut() {
        assert_eq!(excerpt("a\tb\nc", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }

    #[test]
    fn journal_fields_cannot_hold_tabs_or_newlines() {
        assert_eq!(one_line("a\tb\nc\r"), "a b c ");
    }

    #[test]
    fn suggests_close_field_names_only() {
        let known = ["address", "sshUser", "sshPort", "hostKey", "tags"];
        assert_eq!(suggest("adress", known), Some("address".into()));
        assert_eq!(suggest("sshuser", known), Some("sshUser".into()));
        assert_eq!(suggest("hostkey", known), Some("hostKey".into()));
        assert_eq!(suggest("colour", known), None);
    }

    #[test]
    fn urls_lose_their_passwords_and_query_values() {
        assert_eq!(
            redact_url("https://alice:s3cret@example.org/health?token=abc&x=1"),
            "https://alice:***@example.org/health?token=***&x=***"
        );
        assert_eq!(
            redact_url("https://ghp_T0KEN@example.org/"),
            "https://***@example.org/"
        );
        assert_eq!(
            redact_url("http://[fd00::1]:8080/"),
            "http://[fd00::1]:8080/"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn store_paths_keep_seven_hash_characters() {
        assert_eq!(
            short_store_path("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web1-v2"),
            "0123456-nixos-system-web1-v2"
        );
        assert_eq!(short_store_path("/somewhere/else"), "else");
    }
}
