//! `mcpguard doctor`: real probes of what the daemon holds on this
//! machine. It launches a probe server (this binary's hidden
//! `__doctor-probe` mode) through the daemon exactly as `mcpguard run`
//! would, as the caller, under a built-in policy; the probe tries each
//! class of [`classes::CLASSES`] and says what it saw; then doctor asks the
//! daemon for the launch's audit records, as `mcpguard audit` does, and
//! says per class whether it was held, recorded, or what is missing.

mod classes;
mod probe;
mod report;

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::{
        fd::{AsRawFd, OwnedFd},
        linux::net::SocketAddrExt,
        unix::{
            fs::PermissionsExt,
            net::{SocketAddr as UnixAddr, UnixListener},
        },
    },
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc,
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::Value;

use self::{probe::Targets, report::Verdict};
use super::{
    run::{self, Event, How},
    status::{self, ViaDaemon},
};
use crate::{
    audit::query::{Clock, Filter, View},
    daemon::DEFAULT_SOCKET,
    kernel::coverage,
};

/// How long doctor waits for the probe's records to reach the log.
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// How long the probe's results may take to arrive once it exited.
const RESULT_WAIT: Duration = Duration::from_secs(5);
/// The name the probe's records carry.
const SERVER: &str = "mcpguard-doctor";
/// Programs the exec probe tries to run (the first that exists).
const EXEC_TARGETS: &[&str] = &["/usr/bin/true", "/bin/true", "/bin/sh"];
/// The probe directory's name before tempfile's random suffix.
const DIR_PREFIX: &str = ".mcpguard-doctor-";

#[derive(Args)]
pub struct DoctorArgs {
    /// The daemon's socket.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Why doctor could not judge anything (exit 2).
struct Usage(String);

pub fn main(args: DoctorArgs) -> ExitCode {
    match doctor(&args) {
        Ok(verdict) => {
            if let Err(e) = report::write(&verdict, args.json) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("mcpguard doctor: cannot write output: {e}");
                }
            }
            if verdict.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(Usage(message)) => {
            eprintln!("mcpguard doctor: {}", crate::term::escape(&message));
            ExitCode::from(2)
        }
    }
}

/// The hidden probe mode: every class's attempt, one JSON line each on
/// stderr.
pub fn probe_main(targets: &str) -> ExitCode {
    let Ok(targets) = serde_json::from_str::<Targets>(targets) else {
        eprintln!("mcpguard __doctor-probe: unreadable targets");
        return ExitCode::from(2);
    };
    for class in classes::CLASSES {
        let seen = probe::Seen {
            class: class.name.into(),
            seen: (class.run)(&targets),
        };
        if let Ok(line) = serde_json::to_string(&seen) {
            eprintln!("{line}");
        }
    }
    ExitCode::SUCCESS
}

fn doctor(args: &DoctorArgs) -> Result<Verdict, Usage> {
    if nix::unistd::geteuid().is_root() {
        return Err(Usage(
            "run doctor as the user whose servers mcpguard guards: the daemon launches no \
             server as root"
                .into(),
        ));
    }
    let before = status::status(&args.socket).map_err(|e| {
        Usage(format!(
            "{e}. Start the daemon with `sudo systemctl start mcpguard` (installed by `sudo \
             mcpguard install`), or `sudo mcpguard daemon`"
        ))
    })?;
    let scene = Scene::set_up()?;
    let (launch, seen) = match launch_probe(&args.socket, &scene.targets) {
        Ok(got) => got,
        Err(why) => return Ok(Verdict::launch_failed(before, &why)),
    };
    let records = wait_records(&args.socket, &launch, &scene.targets);
    // The layers and the log's state now, for the reasons (the log may
    // have failed since).
    let now = status::status(&args.socket).unwrap_or(before);
    Ok(Verdict::judge(
        now,
        &launch,
        &scene.targets,
        &seen,
        &records,
    ))
}

/// What the probe aims at, and what doctor set up for it; dropping it
/// removes the temporary directory and closes the listener.
struct Scene {
    targets: Targets,
    _dir: tempfile::TempDir,
    _listener: UnixListener,
}

impl Scene {
    fn set_up() -> Result<Scene, Usage> {
        // Not /tmp: the server has its own empty one. In the caller's home,
        // which the server sees and the policy does not name.
        let home = run::home();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&home)
            .map_err(|e| {
                Usage(format!(
                    "cannot create a probe directory in {}: {e}",
                    home.display()
                ))
            })?;
        let file = dir.path().join("not-in-the-policy");
        std::fs::write(&file, "mcpguard doctor\n")
            .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| Usage(format!("cannot write {}: {e}", file.display())))?;
        let pid = std::process::id();
        // The directory's random suffix (tempfile's), for names no other
        // run uses.
        let nonce = dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let abstract_name = format!("mcpguard-doctor-{pid}-{nonce}");
        let listener = UnixAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| UnixListener::bind_addr(&addr))
            .map_err(|e| Usage(format!("cannot listen on an abstract Unix socket: {e}")))?;
        let exec = EXEC_TARGETS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| Usage(format!("none of {EXEC_TARGETS:?} exists to try to run")))?;
        let targets = Targets {
            file,
            // The discard port on loopback: nothing need listen there.
            connect: SocketAddr::from(([127, 0, 0, 1], 9)),
            name: format!("denied-{pid}-{nonce}.mcpguard-doctor.invalid"),
            exec,
            pid,
            abstract_name,
        };
        Ok(Scene {
            targets,
            _dir: dir,
            _listener: listener,
        })
    }
}

/// The built-in probe policy: the probe binary, its loader and libraries,
/// and the exec target readable (so only the exec allowance refuses it);
/// nothing else beyond the runtime baseline, no network, no environment.
/// It accepts every weaker guarantee a kernel may force: doctor measures
/// what holds rather than being refused, and reports what does not.
fn probe_policy(exe: &Path, targets: &Targets) -> String {
    let libs: Vec<&str> = ["/usr/lib", "/usr/lib64", "/lib", "/lib64"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let list = |extra: &[&Path]| {
        extra
            .iter()
            .map(|p| p.display().to_string())
            .chain(libs.iter().map(|s| s.to_string()))
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let weaker: Vec<String> = coverage::Class::ALL
        .into_iter()
        .filter(|c| c.acceptable())
        .map(|c| format!("{:?}", c.name()))
        .collect();
    format!(
        "name = \"{SERVER}\"\n[filesystem]\nread = [{}]\nexec = [{}]\n[env]\npass = []\n\
         [kernel]\naccept_weaker = [{}]\n",
        list(&[exe, &targets.exec]),
        list(&[exe]),
        weaker.join(", ")
    )
}

/// Launches the probe through the daemon; its launch id and what each
/// class saw.
fn launch_probe(socket: &Path, targets: &Targets) -> Result<(String, Vec<probe::Seen>), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this mcpguard binary: {e}"))?;
    let text = probe_policy(&exe, targets);
    let argv = vec![
        exe.display().to_string(),
        "__doctor-probe".into(),
        serde_json::to_string(targets).map_err(|e| e.to_string())?,
    ];
    let null_in = File::open("/dev/null").map_err(|e| e.to_string())?;
    let null_out = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    let (err_r, err_w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let results = read_lines(err_r);
    let how = How {
        stdio: [null_in.as_raw_fd(), null_out.as_raw_fd(), err_w.as_raw_fd()],
        learn: false,
        forward_signals: false,
    };
    let mut launch = None;
    let status = run::launch_events(
        Path::new("(mcpguard doctor's built-in probe policy)"),
        text,
        socket,
        argv,
        how,
        &mut |event| {
            if let Event::Started { launch: id } = event {
                launch = Some(id);
            }
        },
    );
    // The daemon holds its own copy until the session ends.
    drop(err_w);
    let lines = results.recv_timeout(RESULT_WAIT).unwrap_or_default();
    let status = status?;
    let launch = launch.ok_or("the daemon gave no launch id")?;
    let seen: Vec<probe::Seen> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if seen.is_empty() {
        return Err(format!(
            "the probe ({}) reported nothing and ended with {status:?}: {}",
            exe.display(),
            lines.join(" / ")
        ));
    }
    Ok((launch, seen))
}

/// Every line written to `fd`, on a thread, once it reaches its end.
fn read_lines(fd: OwnedFd) -> mpsc::Receiver<Vec<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines = BufReader::new(File::from(fd))
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    rx
}

/// The launch's records, asked for until every class has one or
/// [`RECORD_WAIT`] has passed (Landlock's records come through the kernel's
/// audit and may trail the exit).
fn wait_records(socket: &Path, launch: &str, targets: &Targets) -> Vec<Value> {
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        let records = launch_records(socket, launch);
        let all = classes::CLASSES
            .iter()
            .all(|c| records.iter().any(|r| (c.matches)(r, targets)));
        if all || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The launch's records, through the daemon as `mcpguard audit` asks for a
/// user's own (none yet, or none readable: empty).
fn launch_records(socket: &Path, launch: &str) -> Vec<Value> {
    let filter = Filter {
        launch: Some(launch.into()),
        ..Filter::default()
    };
    let view = View {
        json: true,
        color: false,
        clock: Clock::utc(),
        calls: false,
    };
    let mut out = Vec::new();
    match status::audit(socket, &filter, &view, &mut out) {
        // A launch no record names yet.
        Ok(()) | Err(ViaDaemon::Usage(_)) => {}
        Err(ViaDaemon::Unreachable(_) | ViaDaemon::Failed(_)) => return Vec::new(),
    }
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn the_probe_policy_parses_and_names_neither_the_file_nor_the_network() {
        let targets = Targets {
            file: "/home/u/.mcpguard-doctor-x/not-in-the-policy".into(),
            connect: ([127, 0, 0, 1], 9).into(),
            name: "denied-1.mcpguard-doctor.invalid".into(),
            exec: "/usr/bin/true".into(),
            pid: 1,
            abstract_name: "x".into(),
        };
        let text = probe_policy(Path::new("/usr/local/bin/mcpguard"), &targets);
        let policy = Policy::parse(&text, Path::new("doctor.toml")).unwrap();
        assert_eq!(policy.name, SERVER);
        assert!(!text.contains(".mcpguard-doctor-"), "{text}");
        assert!(policy.network.allow.is_empty() && policy.network.hosts.is_empty());
    }
}
