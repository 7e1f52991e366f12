//! `cargo xtask setup`: everything a fresh machine needs to build mcpguard and
//! run its tests, each step checked first so a second run takes seconds.
//!
//! - apt packages the tests and benchmarks use;
//! - `rust-src` for the nightly toolchain (eBPF builds core from source);
//! - `bpf-linker` built against the nightly toolchain's own libLLVM (its
//!   major version is read from `rustc +nightly -vV`, never assumed);
//! - the unprivileged user guarded servers run as in tests and the demo,
//!   and a second one whose private directories the first must not reach;
//! - the MCP peers (PyPI and npm), installed as that user under its home.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::sh;

/// The unprivileged user the tests and the demo run servers as.
pub const TEST_USER: &str = "mcpguard-test";

/// A second unprivileged user, without a home or a login shell: the escape
/// suite puts sockets in its 0700 directories (`/run/user/<uid>`).
pub const OTHER_USER: &str = "mcpguard-other";

/// bubblewrap is the bench's comparison sandbox; srt (below) runs it too,
/// bridges its proxies with socat and scans with ripgrep. gcc and
/// libc6-dev build the escape suite's hostile programs; e2fsprogs makes
/// the filesystem the audit-log fault tests force read-only. `cargo xtask
/// vm` boots Debian kernels in QEMU from a busybox initramfs it packs with
/// cpio, after kmod's depmod indexed the kernel's modules.
const APT_PACKAGES: &[&str] = &[
    "python3-venv",
    "iproute2",
    "bubblewrap",
    "socat",
    "ripgrep",
    "gcc",
    "libc6-dev",
    "e2fsprogs",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "cpio",
    // systemd as PID 1 in the guest of `cargo xtask vm --set systemd`.
    "systemd",
];

/// Exact versions, so a fresh machine tests against what was tested here.
const PYPI_PEERS: &[&str] = &[
    "mcp==2.3.0",
    "mcp-server-time==2026.10.19",
    // Run under policies/git.toml and policies/fetch.toml in the tests.
    "mcp-server-git==2026.10.19",
    "mcp-server-fetch==2026.10.24",
    // uvx, for the bench's direct runs of `uvx` servers.
    "uv==0.13.9",
];
const NPM_PEERS: &[&str] = &[
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    // Run under policies/memory.toml in the tests.
    "@modelcontextprotocol/server-memory@2026.8.31",
    // Anthropic's sandbox runtime (`srt`), compared against in the bench.
    "@anthropic-ai/sandbox-runtime@0.0.83",
];

pub fn run() -> Result<()> {
    if !crate::nix_is_root() {
        bail!("setup installs packages and creates a user: run `cargo xtask` as root");
    }
    apt()?;
    rust_src()?;
    bpf_linker()?;
    let user = test_user()?;
    other_user()?;
    peers(&user)?;
    Ok(())
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !sh::output(&mut sh::cmd("dpkg-query", &["-W", "-f=${Status}", p]))
                .map(|s| s.contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    sh::run(&mut sh::cmd("apt-get", &["update", "-q"]))?;
    let mut install = sh::cmd(
        "apt-get",
        &["install", "-y", "-q", "--no-install-recommends"],
    );
    install
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    sh::run(&mut install)
}

fn rust_src() -> Result<()> {
    let installed = sh::output(&mut sh::cmd(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    ))
    .context("the nightly toolchain builds the eBPF programs; is it installed (`rustup toolchain list`)?")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    sh::run(&mut sh::cmd(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    ))
}

/// The nightly's libLLVM shared object and its LLVM major version.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let vv = sh::output(&mut sh::cmd("rustc", &["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` names no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("cannot read the LLVM major from {version:?}"))?;
    let sysroot = sh::output(&mut sh::cmd("rustc", &["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: the nightly toolchain ships none",
                lib.display()
            )
        })?;
    Ok((so, major))
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cargo"))
        .join("bin")
}

/// Whether the installed bpf-linker runs and loads exactly `llvm_so`.
fn bpf_linker_matches(linker: &Path, llvm_so: &Path) -> bool {
    if !sh::succeeds(&mut sh::cmd(&linker.to_string_lossy(), &["--version"])) {
        return false;
    }
    let Ok(ldd) = sh::output(&mut sh::cmd("ldd", &[&linker.to_string_lossy()])) else {
        return false;
    };
    let want = fs::canonicalize(llvm_so).ok();
    ldd.lines()
        .filter(|l| l.contains("libLLVM"))
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|rhs| rhs.split_whitespace().next())
        .any(|p| fs::canonicalize(p).ok() == want)
}

fn bpf_linker() -> Result<()> {
    let (llvm_so, major) = nightly_llvm()?;
    let linker = cargo_bin().join("bpf-linker");
    if bpf_linker_matches(&linker, &llvm_so) {
        return Ok(());
    }
    // bpf-linker's build wants an LLVM prefix with lib/libLLVM.so; its
    // runpath keeps pointing here, so the directory must stay.
    let prefix = home_dir().join(format!(".local/share/mcpguard/llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = llvm_so.file_name().context("libLLVM has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(&llvm_so, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker against LLVM {major} ({})",
        llvm_so.display()
    );
    let mut install = sh::cargo(&[
        "install",
        "--force",
        "--locked",
        "bpf-linker",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ]);
    install.env("LLVM_PREFIX", &prefix);
    sh::run(&mut install)?;
    if !bpf_linker_matches(&linker, &llvm_so) {
        bail!(
            "bpf-linker was built but does not load {}: check `ldd {}`",
            llvm_so.display(),
            linker.display()
        );
    }
    Ok(())
}

/// The test user's home, uid and gid.
pub struct User {
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// Create the test user if needed.
fn test_user() -> Result<User> {
    if !sh::succeeds(&mut sh::cmd("id", &["-u", TEST_USER])) {
        sh::run(&mut sh::cmd(
            "useradd",
            &[
                "--create-home",
                "--shell",
                "/bin/sh",
                "--user-group",
                TEST_USER,
            ],
        ))?;
    }
    lookup_test_user()
}

/// Create the second test user if needed.
fn other_user() -> Result<()> {
    if sh::succeeds(&mut sh::cmd("id", &["-u", OTHER_USER])) {
        return Ok(());
    }
    sh::run(&mut sh::cmd(
        "useradd",
        &[
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            OTHER_USER,
        ],
    ))
}

/// The test user as the passwd database has it (`setup` creates it).
pub fn lookup_test_user() -> Result<User> {
    let passwd = sh::output(&mut sh::cmd("getent", &["passwd", TEST_USER]))?;
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let bad = || format!("unexpected passwd entry for {TEST_USER}: {passwd:?}");
    let (Some(uid), Some(gid), Some(home)) = (fields.get(2), fields.get(3), fields.get(5)) else {
        bail!(bad());
    };
    Ok(User {
        home: PathBuf::from(home),
        uid: uid.parse().with_context(bad)?,
        gid: gid.parse().with_context(bad)?,
    })
}

/// Run a command as the test user, with its HOME.
fn as_user(program: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = sh::cmd("runuser", &["-u", TEST_USER, "--", program]);
    cmd.args(args).current_dir("/");
    cmd
}

/// The MCP peers, installed as the test user so they sit where a user's own
/// installs would: a venv and an npm prefix under ~/.local/share/mcpguard.
fn peers(user: &User) -> Result<()> {
    let dir = user.home.join(".local/share/mcpguard");
    let stamp = dir.join("peers.stamp");
    let want = format!(
        "pypi {}\nnpm {}\n",
        PYPI_PEERS.join(" "),
        NPM_PEERS.join(" ")
    );
    let venv_python = dir.join("venv/bin/python");
    if venv_python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    let d = dir.to_string_lossy().into_owned();
    sh::run(&mut as_user("mkdir", &["-p", &d]))?;
    if !venv_python.exists() {
        sh::run(&mut as_user(
            "/usr/bin/python3",
            &["-m", "venv", &format!("{d}/venv")],
        ))?;
    }
    let pip = format!("{d}/venv/bin/pip");
    let mut args = vec!["install", "--quiet"];
    args.extend_from_slice(PYPI_PEERS);
    sh::run(&mut as_user(&pip, &args))?;
    let prefix = format!("{d}/npm");
    let mut args = vec![
        "install",
        "--prefix",
        &prefix,
        "--no-audit",
        "--no-fund",
        "--silent",
    ];
    args.extend_from_slice(NPM_PEERS);
    sh::run(&mut as_user("/usr/bin/npm", &args))?;
    fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    std::os::unix::fs::chown(&stamp, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", stamp.display()))
}
