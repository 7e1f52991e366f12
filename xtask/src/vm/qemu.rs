//! Booting a guest: the one place the QEMU command line is built (TCG, the
//! host's root shared read-only over 9p, a writable results directory),
//! and a bounded wait for the guest to power itself off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Who runs first in the guest after the initramfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The guest script itself is PID 1 (busybox-style, seconds to boot).
    Script,
    /// systemd is PID 1 and runs the guest script from a oneshot unit
    /// (`mcpguard-vm.service`, written by xtask/vm/init.sh).
    Systemd,
}

/// One boot: what to boot and what to run.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// The guest kernel's `lib/modules/<release>` on the host (bound into
    /// the guest's /lib/modules), if modprobe should find them.
    pub modules: Option<&'a Path>,
    pub init: Init,
    /// The script the guest runs (a host path; the guest sees the same).
    pub script: &'a Path,
    /// The host directory the guest writes its results to
    /// (/mcpguard-vm/out inside).
    pub out: &'a Path,
    /// The checkout the guest works in (`MCPGUARD_ROOT` under systemd).
    pub root: &'a Path,
}

/// The QEMU command line for `boot`.
pub fn command(boot: &Boot<'_>) -> Command {
    let mut append = format!(
        "console=ttyS0 panic=-1 rdinit=/init GUEST_INIT={} GUEST_ROOT={} GUEST_MODE={}",
        boot.script.display(),
        boot.root.display(),
        match boot.init {
            Init::Script => "script",
            Init::Systemd => "systemd",
        }
    );
    if let Some(modules) = boot.modules {
        append.push_str(&format!(" GUEST_MODULES={}", modules.display()));
    }
    match boot.init {
        Init::Script => append.push_str(" quiet"),
        // The unit init.sh writes, after sysinit.target; no login prompt.
        Init::Systemd => append
            .push_str(" systemd.unit=mcpguard-vm.service systemd.mask=serial-getty@ttyS0.service"),
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    // One host thread for both vCPUs: with multi-threaded TCG, the kernel
    // patching its own text (a tracepoint's static key, as the daemon
    // attaches the syscall tracepoints) hit a stray int3 on the other
    // vCPU and the guest panicked (6.12, QEMU 7.2).
    cmd.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(boot.vmlinuz)
    .arg("-initrd")
    .arg(boot.initrd)
    .arg("-append")
    .arg(append)
    .arg("-virtfs")
    .arg("local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap")
    .arg("-virtfs")
    .arg(format!(
        "local,path={},mount_tag=vmout,security_model=passthrough,multidevs=remap",
        boot.out.display()
    ));
    cmd
}

/// How long a guest that has written its exit status may take to power off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Boots, with the serial console written to `console`, and waits up to
/// `timeout` for the guest to power off. Errors if QEMU fails or the
/// guest overstays (it is killed).
pub fn run(boot: &Boot<'_>, console: &Path, timeout: Duration) -> Result<Duration> {
    let log =
        fs::File::create(console).with_context(|| format!("creating {}", console.display()))?;
    let mut cmd = command(boot);
    eprintln!(
        "xtask: booting {} (console: {})",
        boot.vmlinuz.display(),
        console.display()
    );
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64 (apt package qemu-system-x86)")?;
    let exit_file = boot.out.join("exit");
    let mut finished: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("qemu exited with {status}; see {}", console.display());
            }
            return Ok(start.elapsed());
        }
        // The guest wrote its verdict: its shutdown gets a grace period,
        // then it is stopped from here (systemd's poweroff was seen to
        // hang on the 9p root after the test had finished).
        finished = finished.or_else(|| exit_file.exists().then(Instant::now));
        if finished.is_some_and(|at| at.elapsed() > SHUTDOWN_GRACE) {
            child.kill()?;
            child.wait()?;
            eprintln!(
                "xtask: the guest wrote its exit status but had not powered off {} s later; stopped it",
                SHUTDOWN_GRACE.as_secs()
            );
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            bail!(
                "the guest ran longer than {} s and was killed; see {}",
                timeout.as_secs(),
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh, empty results directory.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}
