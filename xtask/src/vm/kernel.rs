//! The kernels `cargo xtask vm` boots: Debian's packages, fetched with
//! `apt-get download`, unpacked and indexed with `depmod` once into the
//! cache; or the host's own image from /boot.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::sh;

/// Debian 12's kernel (Landlock ABI 2).
pub const DEBIAN_6_1: &str = "linux-image-6.1.0-50-amd64";
/// bookworm-backports' kernel (Landlock ABI 6, `bpf` in the LSM list).
pub const DEBIAN_6_12: &str = "linux-image-6.12.111+deb12-amd64";

/// A kernel named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// The running kernel.
    Host,
}

impl Choice {
    /// The name used in paths and reports.
    pub fn name(self) -> &'static str {
        match self {
            Choice::V6_1 => "6.1",
            Choice::V6_12 => "6.12",
            Choice::Host => "host",
        }
    }
}

/// A kernel image ready to boot, with its modules.
pub struct Kernel {
    /// `uname -r` of the kernel.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`, indexed by depmod.
    pub modules: PathBuf,
}

/// Where the host keeps its kernel, or `None` when /boot has no image for
/// the running kernel (a container or a VM booted from outside).
pub fn host() -> Result<Option<Kernel>> {
    let release = sh::output(&mut sh::cmd("uname", &["-r"]))?
        .trim()
        .to_owned();
    let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    let modules = PathBuf::from(format!("/lib/modules/{release}"));
    if !vmlinuz.exists() || !modules.join("modules.dep").exists() {
        return Ok(None);
    }
    Ok(Some(Kernel {
        release,
        vmlinuz,
        modules,
    }))
}

/// Downloads (once) and unpacks (once) Debian package `package` under
/// `cache`.
pub fn debian(package: &str, cache: &Path) -> Result<Kernel> {
    let dir = cache.join(package);
    let root = dir.join("root");
    let done = dir.join(".unpacked");
    if !done.exists() {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let deb = download(package, &dir)?;
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
        }
        sh::run(sh::cmd("dpkg-deb", &["-x"]).arg(&deb).arg(&root))?;
        let release = only_release(&root)?;
        sh::run(sh::cmd("depmod", &["-b"]).arg(&root).arg(&release))?;
        fs::write(&done, "").with_context(|| format!("writing {}", done.display()))?;
    }
    let release = only_release(&root)?;
    Ok(Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
        release,
    })
}

/// The package's .deb in `dir`, fetched with `apt-get download` unless an
/// earlier run left it there.
fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    if let Some(deb) = find_deb(package, dir)? {
        return Ok(deb);
    }
    sh::run(sh::cmd("apt-get", &["download", package]).current_dir(dir))?;
    find_deb(package, dir)?.with_context(|| {
        format!(
            "`apt-get download {package}` left no .deb in {}",
            dir.display()
        )
    })
}

fn find_deb(package: &str, dir: &Path) -> Result<Option<PathBuf>> {
    // apt names the file <package>_<version>_<arch>.deb, with `+` as-is.
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The one release under `root/lib/modules`.
fn only_release(root: &Path) -> Result<String> {
    let dir = root.join("lib/modules");
    let names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("{} holds {names:?}, not one kernel", dir.display()),
    }
}
