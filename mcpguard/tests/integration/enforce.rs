//! Enforcement: egress by address (eBPF) and filesystem (Landlock), each
//! asserting the errno the server sees and the audit record it leaves.

use std::{
    net::{TcpListener, UdpSocket},
    os::unix::fs::{chown, PermissionsExt},
};

use crate::harness::*;

const NET_PROBE: &str = r#"
import errno, socket, sys
def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def tcp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.connect((host, port))
        return "ok"
    except OSError as e:
        return name(e)
    finally:
        s.close()
def udp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, port))
        return "ok"
    except OSError as e:
        return name(e)
    finally:
        s.close()
p, q, p6, q6, u = (int(a) for a in sys.argv[1:6])
print("v4_allowed", tcp(socket.AF_INET, "127.0.0.1", p))
print("v4_denied", tcp(socket.AF_INET, "127.0.0.1", q))
print("v6_allowed", tcp(socket.AF_INET6, "::1", p6))
print("v6_denied", tcp(socket.AF_INET6, "::1", q6))
print("mapped_allowed", tcp(socket.AF_INET6, "::ffff:127.0.0.1", p))
print("mapped_denied", tcp(socket.AF_INET6, "::ffff:127.0.0.1", q))
print("udp_allowed", udp(socket.AF_INET, "127.0.0.1", u))
print("udp_denied", udp(socket.AF_INET, "127.0.0.1", q))
print("udp6_denied", udp(socket.AF_INET6, "::1", u))
"#;

fn port(l: &TcpListener) -> u16 {
    l.local_addr().unwrap().port()
}

#[test]
fn egress_allows_listed_destinations_and_denies_the_rest_with_eperm_and_a_record() {
    let d = Daemon::start();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed6 = TcpListener::bind("[::1]:0").unwrap();
    let denied6 = TcpListener::bind("[::1]:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (p, q, p6, q6, u) = (
        port(&allowed),
        port(&denied),
        port(&allowed6),
        port(&denied6),
        udp.local_addr().unwrap().port(),
    );
    let dir = tempdir("net");
    let pol = policy(
        &dir,
        "net",
        &format!(
            "name = \"it-net\"\n{}\n[network]\nallow = [\"127.0.0.1:{p}\", \"[::1]:{p6}\", \"127.0.0.0/8:{u}\"]\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[&dir])
        ),
    );
    let script = dir.join("net.py");
    std::fs::write(&script, NET_PROBE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.run(
        &pol,
        &[
            "/usr/bin/python3",
            script.to_str().unwrap(),
            &p.to_string(),
            &q.to_string(),
            &p6.to_string(),
            &q6.to_string(),
            &u.to_string(),
        ],
    );
    let text = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    for (case, want) in [
        ("v4_allowed", "ok"),
        ("v4_denied", "EPERM"),
        ("v6_allowed", "ok"),
        ("v6_denied", "EPERM"),
        ("mapped_allowed", "ok"),
        ("mapped_denied", "EPERM"),
        ("udp_allowed", "ok"),
        ("udp_denied", "EPERM"),
        ("udp6_denied", "EPERM"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{case} {want}")),
            "{case}: expected {want}\n{}",
            describe(&out)
        );
    }
    for (what, op, addr, port) in [
        ("v4 deny", "connect4", "127.0.0.1", q),
        ("v6 deny", "connect6", "::1", q6),
        ("mapped deny", "connect6", "127.0.0.1", q),
        ("udp deny", "sendmsg4", "127.0.0.1", q),
        ("udp6 deny", "sendmsg6", "::1", u),
    ] {
        d.wait_record(what, |r| {
            is_kind(r, "connect")
                && r["server"] == "it-net"
                && r["op"] == op
                && r["addr"] == addr
                && r["port"] == port
                && r["verdict"] == "deny"
                && r["denied"] == true
        });
    }
    d.wait_record("v4 allow", |r| {
        is_kind(r, "connect") && r["op"] == "connect4" && r["port"] == p && r["verdict"] == "allow"
    });
}

#[test]
fn reads_outside_the_policy_fail_with_eacces_and_leave_a_denied_open_record() {
    let d = Daemon::start();
    let u = user();
    // A secret the user can read when unguarded.
    let ssh = u.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let secret = ssh.join("id_mcpguard_it");
    std::fs::write(&secret, "PRIVATE KEY\n").unwrap();
    chown(&ssh, Some(u.uid), Some(u.gid)).unwrap();
    chown(&secret, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let dir = tempdir("fs");
    let allowed = dir.join("allowed.txt");
    std::fs::write(&allowed, "hello\n").unwrap();
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pol = policy(
        &dir,
        "fs",
        &format!(
            // No tool call here: allowed opens are recorded at `all` only.
            "name = \"it-fs\"\n{}\n[env]\npass = [\"PATH\"]\n[audit]\nfiles = \"all\"\n",
            base_fs(&[&allowed])
        ),
    );
    let script = format!(
        "import errno\nfor p in ['{}', '{}']:\n    try:\n        print('read', open(p).read().strip())\n    except OSError as e:\n        print('error', errno.errorcode[e.errno], p)\n",
        allowed.display(),
        secret.display()
    );
    let out = d.run(&pol, &["/usr/bin/python3", "-c", &script]);
    let text = stdout_of(&out);
    assert!(
        text.contains("read hello"),
        "allowed read failed\n{}",
        describe(&out)
    );
    assert!(
        text.contains(&format!("error EACCES {}", secret.display())),
        "secret was not denied\n{}",
        describe(&out)
    );
    d.wait_record("denied open of the secret", |r| {
        is_kind(r, "open")
            && r["server"] == "it-fs"
            && r["path"] == secret.to_str().unwrap()
            && r["errno"] == "EACCES"
            && r["denied"] == true
    });
    d.wait_record("allowed open", |r| {
        is_kind(r, "open") && r["path"] == allowed.to_str().unwrap() && r["denied"] == false
    });
    d.wait_record("exec of python", |r| {
        is_kind(r, "exec") && r["server"] == "it-fs" && r["filename"] == "/usr/bin/python3"
    });
    let launch = d.wait_record("launch record", |r| {
        is_kind(r, "launch") && r["server"] == "it-fs"
    });
    assert_eq!(launch["layers"]["ebpf_egress"], true, "{launch}");
    assert!(
        launch["layers"]["landlock"].is_object(),
        "launch record must state the Landlock status: {launch}"
    );
}

/// Sets a sysctl for the length of a test, restoring it on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

#[test]
fn icmp_sockets_are_refused_and_recorded_unless_the_policy_names_them() {
    // Let every group open ping sockets, so the kernel's own check passes
    // and the fence is what decides.
    let _ping = Sysctl::set("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    let d = Daemon::start();
    let dir = tempdir("sock");
    let script = "import errno, socket\n\
        for fam in (socket.AF_INET, socket.AF_INET6):\n\
        \x20   proto = socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6\n\
        \x20   try:\n\
        \x20       socket.socket(fam, socket.SOCK_DGRAM, proto).close(); print(fam.name, 'ok')\n\
        \x20   except OSError as e:\n\
        \x20       print(fam.name, errno.errorcode[e.errno])\n";
    let deny = policy(
        &dir,
        "nosock",
        &format!(
            "name = \"it-nosock\"\n{}\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[])
        ),
    );
    let out = d.run(&deny, &["/usr/bin/python3", "-c", script]);
    let text = stdout_of(&out);
    assert!(text.contains("AF_INET EPERM"), "{}", describe(&out));
    assert!(text.contains("AF_INET6 EPERM"), "{}", describe(&out));
    d.wait_record("refused ICMP socket", |r| {
        is_kind(r, "socket")
            && r["server"] == "it-nosock"
            && r["protocol"] == "icmp"
            && r["denied"] == true
    });
    let allow = policy(
        &dir,
        "icmp",
        &format!(
            "name = \"it-icmp\"\n{}\n[network]\nsockets = [\"icmp\"]\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[])
        ),
    );
    let out = d.run(&allow, &["/usr/bin/python3", "-c", script]);
    assert!(stdout_of(&out).contains("AF_INET ok"), "{}", describe(&out));
}
