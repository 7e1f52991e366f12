//! Per-call network rules (`[tools.<name>] network`) against the real
//! kernel: a tool's rules are open while a call to it is in flight and
//! closed before, after and during other tools' calls, for addresses and
//! for names through the server's resolver; each opening and closing is
//! in the call's records, each refusal is a denied connect record.

use serde_json::{json, Value};

use crate::{
    dns::{listeners, Upstream},
    harness::*,
    mcp::client,
};

const FIXTURE: &str = include_str!("../peers/fixture_server.py");

/// The fixture server and a policy giving its `fetch` tool, and only it,
/// 127.0.0.2-3 and cdn.allowed.test (127.0.0.4) on `port`.
fn fetch_policy(port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("call-net");
    let script = dir.join("fixture_server.py");
    std::fs::write(&script, FIXTURE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let peers = peers();
    let etc = [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/gai.conf",
        "/etc/host.conf",
    ];
    let mut read: Vec<&std::path::Path> = vec![&dir, &peers];
    read.extend(etc.iter().map(std::path::Path::new));
    let text = format!(
        "name = \"it-call-net\"\n{}\n[network]\nallow_local_answers = true\n\
         [env]\npass = [\"PATH\", \"HOME\", \"FIXTURE_NET\", \"FIXTURE_STARTUP_CONNECT\"]\n\
         [tools]\ndeny = [\"delete_*\"]\n\
         [tools.fetch]\nnetwork = [\"127.0.0.2/31:{port}\", \"cdn.allowed.test:{port}\"]\n",
        base_fs(&read)
    );
    (policy(&dir, "it-call-net", &text), script)
}

fn connect(r: &Value, addr: &str, port: u16, verdict: &str, tool: Option<&str>) -> bool {
    is_kind(r, "connect")
        && r["op"] == "connect4"
        && r["addr"] == addr
        && r["port"] == port
        && r["verdict"] == verdict
        && r["tool"].as_str() == tool
}

#[test]
fn a_tools_network_rules_are_open_only_while_its_call_is_in_flight() {
    let upstream = Upstream::start();
    let d = Daemon::start_with(&["--upstream-dns", &upstream.addr.to_string()]);
    let (port, _listening) = listeners();
    let (pol, script) = fetch_policy(port);
    let python = peers().join("venv/bin/python");
    let to = |host: &str| json!({"host": host, "port": port});
    let startup = format!("127.0.0.2:{port}");
    let (report, stderr) = client(
        &d,
        Some(&pol),
        &json!([
            ["probe", to("127.0.0.2")],
            ["probe", to("cdn.allowed.test")],
            ["fetch", to("127.0.0.2")],
            ["fetch", to("cdn.allowed.test")],
            ["probe", to("127.0.0.4")],
            ["fetch", {"host": "127.0.0.3", "port": port, "later": 0.5}],
        ]),
        &[python.to_str().unwrap(), script.to_str().unwrap()],
        &[("FIXTURE_NET", "1"), ("FIXTURE_STARTUP_CONNECT", &startup)],
    );
    let text = |i: usize| report["results"][i]["text"][0].as_str().map(str::to_owned);
    let got: Vec<Option<String>> = (0..6).map(text).collect();
    let want = ["EPERM", "gaierror", "ok", "ok", "EPERM", "scheduled"];
    assert_eq!(got, want.map(|w| Some(w.to_owned())), "{report}\n{stderr}");
    // Before any call.
    assert!(
        stderr.contains("fixture: startup connect EPERM"),
        "{stderr}"
    );
    d.wait_record("the connect before any call, refused", |r| {
        connect(r, "127.0.0.2", port, "deny", None)
    });
    // During another tool's call: the address and the name are closed.
    d.wait_record("probe's connect, refused", |r| {
        connect(r, "127.0.0.2", port, "deny", Some("probe"))
    });
    d.wait_record("probe's lookup, refused", |r| {
        is_kind(r, "dns")
            && r["qname"] == "cdn.allowed.test"
            && r["verdict"] == "deny"
            && r["tool"] == "probe"
    });
    // During fetch's calls: open, and the lookup's answer opens its address.
    d.wait_record("fetch's connect, allowed", |r| {
        connect(r, "127.0.0.2", port, "allow", Some("fetch"))
    });
    d.wait_record("fetch's lookup, answered", |r| {
        is_kind(r, "dns")
            && r["qname"] == "cdn.allowed.test"
            && r["verdict"] == "allow"
            && r["tool"] == "fetch"
    });
    d.wait_record("fetch's connect to the answer, allowed", |r| {
        connect(r, "127.0.0.4", port, "allow", Some("fetch"))
    });
    // The answer (TTL 60) closed with the call that asked.
    d.wait_record("probe's connect to fetch's answer, refused", |r| {
        connect(r, "127.0.0.4", port, "deny", Some("probe"))
    });
    // After fetch's last call: closed again.
    d.wait_record("the connect after the call, refused", |r| {
        connect(r, "127.0.0.3", port, "deny", None)
    });
    let launch = d.wait_record("the launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-call-net"
    });
    assert_eq!(
        launch["layers"]["call_network"],
        json!(["fetch"]),
        "{launch}"
    );
    // Each fetch call's timeline: opened when it went to the server,
    // closed when it was answered.
    let network = |state: &'static str| {
        move |r: &Value| {
            is_kind(r, "mcp")
                && r["event"] == "call_network"
                && r["tool"] == "fetch"
                && r["detail"]["network"] == state
        }
    };
    d.wait_record("fetch's rules closed", network("closed"));
    let records = d.records();
    let opened: Vec<&Value> = records.iter().filter(|r| network("open")(r)).collect();
    let closed: Vec<&Value> = records.iter().filter(|r| network("closed")(r)).collect();
    assert_eq!(
        (opened.len(), closed.len()),
        (3, 3),
        "{opened:?} {closed:?}"
    );
    for (open, close) in opened.iter().zip(&closed) {
        assert_eq!(open["call_id"], close["call_id"], "{open} {close}");
        assert_eq!(
            open["detail"]["rules"],
            json!([
                format!("127.0.0.2/31:{port}"),
                format!("cdn.allowed.test:{port}")
            ]),
            "{open}"
        );
        assert!(open["detail"]["error"].is_null(), "{open}");
    }
    assert!(
        !records
            .iter()
            .any(|r| network("open")(r) && r["tool"] == "probe"),
        "probe has no rules"
    );
}
