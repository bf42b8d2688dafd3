//! Sorting another tool's SSH options (deploy-rs `sshOpts`) into tether's
//! fields: a port or user option becomes `sshPort`/`sshUser`, an option
//! tether accepts goes to `sshOptions`, and one it refuses (it would weaken
//! the pinned key or break a session) is kept aside with the reason, to be
//! written as a comment.

use crate::inventory::validate_ssh_options;

/// ssh's flags that take a value (ssh(1)).
const VALUE_FLAGS: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// The options, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedSshOpts {
    /// From `-p N` / `-o Port=N`.
    pub port: Option<u16>,
    /// From `-l USER` / `-o User=USER`.
    pub user: Option<String>,
    /// What goes to `sshOptions`, in order.
    pub kept: Vec<String>,
    /// What tether refuses, as typed, with why.
    pub refused: Vec<(String, String)>,
}

/// Splits `opts` into options (a flag and, where it takes one, its value)
/// and sorts each.
pub fn map_ssh_opts(opts: &[String]) -> MappedSshOpts {
    let mut mapped = MappedSshOpts::default();
    let mut words = opts.iter().peekable();
    while let Some(word) = words.next() {
        let mut group = vec![word.clone()];
        let flag = word.strip_prefix('-').and_then(|w| w.chars().next());
        let mut value = None;
        if let Some(f) = flag.filter(|f| VALUE_FLAGS.contains(*f)) {
            let attached = &word[1 + f.len_utf8()..];
            if attached.is_empty() {
                if let Some(next) = words.next() {
                    group.push(next.clone());
                    value = Some(next.clone());
                }
            } else {
                value = Some(attached.to_string());
            }
        }
        let typed = group.join(" ");
        match (flag, value.as_deref()) {
            (Some('p'), Some(v)) => set_port(&mut mapped, &typed, v),
            (Some('l'), Some(v)) => mapped.user = Some(v.to_string()),
            (Some('o'), Some(kv)) => {
                let (key, val) = kv.split_once('=').unwrap_or((kv, ""));
                match key.trim().to_ascii_lowercase().as_str() {
                    "port" => set_port(&mut mapped, &typed, val.trim()),
                    "user" => mapped.user = Some(val.trim().to_string()),
                    _ => keep_or_refuse(&mut mapped, group, typed),
                }
            }
            _ => keep_or_refuse(&mut mapped, group, typed),
        }
    }
    mapped
}

fn set_port(mapped: &mut MappedSshOpts, typed: &str, value: &str) {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => mapped.port = Some(p),
        _ => mapped
            .refused
            .push((typed.to_string(), "not a port number".to_string())),
    }
}

fn keep_or_refuse(mapped: &mut MappedSshOpts, group: Vec<String>, typed: String) {
    match validate_ssh_options(&group) {
        Ok(()) => mapped.kept.extend(group),
        Err((_, problem)) => mapped.refused.push((typed, problem.to_string())),
    }
}
