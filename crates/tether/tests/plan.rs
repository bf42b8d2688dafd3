//! `tether plan` against real lab hosts (issue 6, acceptance 6): unchanged
//! hosts are reported unchanged; an added and an upgraded fixture package
//! are listed with their versions; a changed fixture service is listed as
//! restarted, estimated from unit files and then by the new system's real
//! `dry-activate`; and no host's system or store changes (with `--copy`
//! only the store grows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Fleet;
use serde_json::Value;

/// What must not change on a host while planning.
#[derive(Debug, PartialEq)]
struct HostState {
    current: String,
    boot: String,
    generation: u32,
    store: Vec<String>,
}

fn state(f: &Fleet, host: &str) -> HostState {
    HostState {
        current: f.current(host),
        boot: f.boot_default(host),
        generation: f.generation(host),
        store: f
            .console(host, "ls /nix/store | sort")
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

fn plan_json(f: &Fleet, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    let out = f.tether(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), doc, stderr)
}

fn host<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["host"] == name))
        .unwrap_or_else(|| panic!("no {name} in {doc:#}"))
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

const OLD: &str = r#"fixture: {
  host1 = {
    packages = [ (fixture.mkPackage { pname = "hello"; version = "2.10"; }) ];
    services = [ { name = "web"; port = 8080; body = "v1"; } ];
  };
}"#;

const NEW: &str = r#"fixture: {
  host1 = {
    packages = [
      (fixture.mkPackage { pname = "hello"; version = "2.12"; })
      (fixture.mkPackage { pname = "curl"; version = "8.0"; })
    ];
    services = [ { name = "web"; port = 8080; body = "v2"; } ];
  };
}"#;

#[test]
fn plan_lists_packages_and_restarts_and_changes_nothing() {
    let f = Fleet::up("p01", 2);
    // host1 first runs hello 2.10 and the web service (deployed for real).
    f.set_hosts(OLD);
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");

    // The change: hello 2.10 -> 2.12, curl 8.0 added, web's body changed.
    // host2's system is the same as the one it runs.
    f.set_hosts(NEW);
    let new1 = f.systems()["host1"].clone();
    let before1 = state(&f, "host1");
    let before2 = state(&f, "host2");

    let (code, doc, stderr) = plan_json(&f, &[]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    assert_eq!(doc["exitCode"], 0);
    let h2 = host(&doc, "host2");
    assert_eq!(h2["status"], "planned");
    assert_eq!(h2["unchanged"], true, "{h2:#}");

    let h1 = host(&doc, "host1");
    assert_eq!(h1["status"], "planned", "{h1:#}");
    assert_eq!(h1["unchanged"], false);
    assert_eq!(h1["newSystem"], new1.as_str());
    assert_eq!(h1["currentSystem"], before1.current.as_str());
    assert_eq!(h1["copied"], false);
    let closure = &h1["closure"];
    assert!(
        closure["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "curl" && names(&p["versions"]) == ["8.0"]),
        "{closure:#}"
    );
    assert!(
        closure["upgraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "hello"
                && names(&c["old"]) == ["2.10"]
                && names(&c["new"]) == ["2.12"]),
        "{closure:#}"
    );
    assert!(closure["sizeAfter"].as_u64().unwrap() > 0);
    assert!(closure["sizeBefore"].as_u64().unwrap() > 0);
    let units = &h1["units"];
    assert_eq!(units["source"], "estimate", "{units:#}");
    assert_eq!(
        names(&units["restart"]),
        ["fixture-web.service"],
        "{units:#}"
    );
    assert!(names(&units["stop"]).is_empty(), "{units:#}");

    // The readable report says the same, and that the units are estimated.
    let out = f.tether(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("host2: unchanged"), "{text}");
    assert!(text.contains("hello 2.10 -> 2.12"), "{text}");
    assert!(text.contains("added      curl 8.0"), "{text}");
    assert!(text.contains("ESTIMATE"), "{text}");
    assert!(
        text.contains("would restart: fixture-web.service"),
        "{text}"
    );

    // Nothing was copied, activated or persisted.
    assert_eq!(state(&f, "host1"), before1, "host1 changed");
    assert_eq!(state(&f, "host2"), before2, "host2 changed");

    // --copy: the real dry-activate of the new system, on the host.
    let (code, doc, stderr) = plan_json(&f, &["--copy"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let h1 = host(&doc, "host1");
    assert_eq!(h1["copied"], true, "{h1:#}");
    assert_eq!(h1["units"]["source"], "dry-activate", "{h1:#}");
    assert_eq!(
        names(&h1["units"]["restart"]),
        ["fixture-web.service"],
        "{h1:#}"
    );
    let after1 = state(&f, "host1");
    assert_eq!(after1.current, before1.current, "host1's system changed");
    assert_eq!(after1.boot, before1.boot);
    assert_eq!(after1.generation, before1.generation);
    assert!(
        before1.store.iter().all(|p| after1.store.contains(p)),
        "host1 lost store paths"
    );
    assert!(f.has_path("host1", &new1), "the closure was copied");
    // host2 is unchanged: nothing to copy there.
    assert_eq!(state(&f, "host2"), before2, "host2 changed");
}

#[test]
fn a_host_that_is_not_who_the_inventory_says_cannot_be_planned() {
    let f = Fleet::up("p02", 2);
    // host2 is pinned to host1's key: the identity check refuses it.
    let key = f.host_key("host1");
    f.set_hosts(&format!(
        r#"{{ host2 = {{ label = "v2"; inventory = {{ hostKey = "{key}"; }}; }}; }}"#
    ));
    let before = state(&f, "host2");
    let (code, doc, stderr) = plan_json(&f, &[]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    assert_eq!(doc["exitCode"], 1);
    assert_eq!(host(&doc, "host1")["unchanged"], true);
    let h2 = host(&doc, "host2");
    assert_eq!(h2["status"], "refused", "{h2:#}");
    assert_eq!(h2["cause"]["kind"], "identity", "{h2:#}");
    assert_eq!(h2["cause"]["problem"], "host-key", "{h2:#}");
    assert_eq!(state(&f, "host2"), before);
}
