//! Writing Rust strings into Nix code as Nix string literals (the
//! expressions tether evaluates, and the inventory `tether init` writes).

/// Returns `s` as a double-quoted Nix string literal that evaluates to
/// exactly `s`.
///
/// Inside `"..."` Nix gives meaning to `\`, `"` and `${`; every `$` is
/// escaped (not only those before `{`), which is always correct because
/// `\$` means `$`, and it avoids reasoning about `$${` sequences. Newlines,
/// tabs and carriage returns are escaped only to keep the expression on one
/// line in logs.
pub fn nix_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::nix_string;

    #[test]
    fn escapes_what_nix_interprets() {
        assert_eq!(nix_string("plain"), r#""plain""#);
        assert_eq!(nix_string(""), r#""""#);
        assert_eq!(nix_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(nix_string("${x} $y $${z}"), r#""\${x} \$y \$\${z}""#);
        assert_eq!(nix_string("a\nb"), r#""a\nb""#);
    }
}
