//! Unix sockets: the escape Landlock does not stop. A guarded server sees
//! empty runtime directories, so docker.sock, the session bus and sockets
//! in /tmp are not there for it; a socket its policy names is.

use std::{
    os::unix::{
        fs::{chown, PermissionsExt},
        net::UnixListener,
        process::CommandExt,
    },
    path::{Path, PathBuf},
};

use crate::harness::*;

/// A listening socket any user may connect to, accepting in the background.
fn listen(path: &Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let accept = l.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in accept.incoming() {
            drop(conn);
        }
    });
    l
}

const PROBE: &str = r#"
import errno, socket, sys
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        print(path, "ok")
    except OSError as e:
        print(path, errno.errorcode.get(e.errno, e.errno))
    finally:
        s.close()
"#;

#[test]
fn unix_sockets_outside_the_policy_are_out_of_reach() {
    let d = Daemon::start();
    let u = user();
    let tag = std::process::id();
    let docker = PathBuf::from(format!("/var/run/mcpguard-it-{tag}-docker.sock"));
    let run_user = PathBuf::from(format!("/run/user/{}", u.uid));
    if !run_user.exists() {
        std::fs::create_dir_all(&run_user).unwrap();
        chown(&run_user, Some(u.uid), Some(u.gid)).unwrap();
        std::fs::set_permissions(&run_user, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let bus = run_user.join(format!("mcpguard-it-{tag}-bus"));
    let tmp = PathBuf::from(format!("/tmp/mcpguard-it-{tag}-sockets/agent.sock"));
    let allowed = PathBuf::from(format!("/tmp/mcpguard-it-{tag}-allowed/ok.sock"));
    let _l: Vec<UnixListener> = [&docker, &bus, &tmp, &allowed]
        .iter()
        .map(|p| listen(p))
        .collect();
    for dir in [tmp.parent().unwrap(), allowed.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bus_in_policy = format!("/run/user/%u/mcpguard-it-{tag}-bus");

    let dir = tempdir("unix");
    let script = dir.join("probe.py");
    std::fs::write(&script, PROBE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = |extra: &[&Path]| {
        let mut a = vec!["/usr/bin/python3".to_string(), script.display().to_string()];
        a.extend(extra.iter().map(|p| p.display().to_string()));
        a
    };
    let all = [
        docker.as_path(),
        bus.as_path(),
        tmp.as_path(),
        allowed.as_path(),
    ];

    // Unguarded, the user reaches every one of them.
    let bare = std::process::Command::new("/usr/bin/python3")
        .args(&args(&all)[1..])
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .unwrap();
    for p in all {
        assert!(
            stdout_of(&bare).contains(&format!("{} ok", p.display())),
            "{}",
            describe(&bare)
        );
    }

    let pol = policy(
        &dir,
        "unix",
        &format!(
            "name = \"it-unix\"\n{}\n[network]\nunix = [{:?}]\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[&dir]),
            allowed.display().to_string()
        ),
    );
    let argv = args(&all);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = d.run(&pol, &argv);
    let text = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    for p in [&docker, &bus, &tmp] {
        assert!(
            text.contains(&format!("{} ENOENT", p.display())),
            "{} reachable\n{}",
            p.display(),
            describe(&out)
        );
    }
    assert!(
        text.contains(&format!("{} ok", allowed.display())),
        "{}",
        describe(&out)
    );

    // Naming the bus (with %u) brings it back.
    let pol2 = policy(
        &dir,
        "unix2",
        &format!(
            "name = \"it-unix2\"\n{}\n[network]\nunix = [{bus_in_policy:?}]\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[&dir])
        ),
    );
    let argv = args(&[&bus]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = d.run(&pol2, &argv);
    assert!(
        stdout_of(&out).contains(&format!("{} ok", bus.display())),
        "{}",
        describe(&out)
    );

    for p in [&docker, &bus, &tmp] {
        d.wait_record("a fenced Unix connect, recorded as denied", |r| {
            is_kind(r, "unix_connect")
                && r["server"] == "it-unix"
                && r["path"] == p.to_str().unwrap()
                && r["fenced"] == true
                && r["denied"] == true
        });
    }
    d.wait_record("the allowed Unix connect", |r| {
        is_kind(r, "unix_connect")
            && r["path"] == allowed.to_str().unwrap()
            && r["result"] == 0
            && r["denied"] == false
    });
    let launch = d.wait_record("launch with the mount fence", |r| {
        is_kind(r, "launch") && r["server"] == "it-unix"
    });
    let hidden = launch["layers"]["mounts"]["hidden"].to_string();
    assert!(
        hidden.contains("/run") && hidden.contains("/tmp"),
        "{launch}"
    );
    for p in [&docker, &bus, &tmp, &allowed] {
        let _ = std::fs::remove_file(p);
    }
}
