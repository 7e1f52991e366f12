//! The guest's initramfs: busybox, the modules that mount the host's tree
//! (9p over virtio, overlayfs) and xtask/vm/init.sh as /init. Built once
//! per kernel release and recipe, cached by a hash of both.

use std::{
    collections::{hash_map::DefaultHasher, HashSet},
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;
use crate::sh;

/// The initramfs /init (committed, so the recipe hash covers it).
const INIT: &str = include_str!("../../vm/init.sh");
/// busybox-static's binary: the initramfs's only executable.
const BUSYBOX: &str = "/bin/busybox";
/// Modules the init loads, leaves of the dependency order; built-in ones
/// (absent from modules.dep, present in modules.builtin) are skipped.
const WANTED: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The cached initramfs for `kernel`, built if missing.
pub fn build(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let modules = load_order(&kernel.modules)?;
    let mut hasher = DefaultHasher::new();
    (INIT, &kernel.release, &modules).hash(&mut hasher);
    let busybox =
        fs::metadata(BUSYBOX).with_context(|| format!("{BUSYBOX} (apt package busybox-static)"))?;
    busybox.len().hash(&mut hasher);
    let out = cache.join(format!(
        "initramfs-{}-{:016x}.gz",
        kernel.release,
        hasher.finish()
    ));
    if out.exists() {
        return Ok(out);
    }
    let stage = cache.join(format!("stage-{}", kernel.release));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    for dir in [
        "bin",
        "proc",
        "sys",
        "dev",
        "lower",
        "upper",
        "newroot",
        "lib/modules",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    fs::copy(BUSYBOX, stage.join("bin/busybox"))?;
    // The kernel runs /init through its #! line before busybox links more.
    std::os::unix::fs::symlink("busybox", stage.join("bin/sh"))?;
    write_executable(&stage.join("init"), INIT)?;
    let mut list = String::new();
    for rel in &modules {
        let name = unpack_module(&kernel.modules.join(rel), &stage.join("lib/modules"))?;
        list.push_str(&name);
        list.push('\n');
    }
    fs::write(stage.join("modlist"), list)?;
    let partial = out.with_extension("partial");
    sh::run(
        sh::cmd(
            "sh",
            &["-c", "find . | cpio -o -H newc --quiet | gzip -1 >\"$0\""],
        )
        .arg(&partial)
        .current_dir(&stage),
    )?;
    fs::rename(&partial, &out)?;
    fs::remove_dir_all(&stage)?;
    Ok(out)
}

/// The wanted modules and their dependencies, each after what it needs,
/// as paths relative to `modules` (from modules.dep).
fn load_order(modules: &Path) -> Result<Vec<String>> {
    let dep_path = modules.join("modules.dep");
    let dep =
        fs::read_to_string(&dep_path).with_context(|| format!("reading {}", dep_path.display()))?;
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let deps_of = |rel: &str| -> Vec<String> {
        dep.lines()
            .find_map(|l| l.strip_prefix(rel).and_then(|r| r.strip_prefix(':')))
            .map(|r| r.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for want in WANTED {
        let Some(rel) = dep.lines().find_map(|l| {
            let path = l.split(':').next()?;
            let file = path.rsplit('/').next()?;
            (module_name(file) == want).then(|| path.to_owned())
        }) else {
            if builtin
                .lines()
                .any(|l| module_name(l.rsplit('/').next().unwrap_or("")) == want)
            {
                continue;
            }
            bail!("module {want} is neither in modules.dep nor built in");
        };
        // Dependencies first (modules.dep lists them transitively).
        let mut needed = deps_of(&rel);
        needed.reverse();
        needed.push(rel);
        for m in needed {
            if seen.insert(m.clone()) {
                order.push(m);
            }
        }
    }
    Ok(order)
}

/// `9pnet_virtio.ko.xz` → `9pnet_virtio`.
fn module_name(file: &str) -> &str {
    file.split(".ko").next().unwrap_or(file)
}

/// Copies (decompressing) one module into `dir`; returns its file name.
fn unpack_module(path: &Path, dir: &Path) -> Result<String> {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let name = format!("{}.ko", module_name(&file));
    let target = dir.join(&name);
    let decompress = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => None,
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        Some("gz") => Some("gzip"),
        _ => bail!("{}: unknown module compression", path.display()),
    };
    match decompress {
        None => {
            fs::copy(path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
        Some(tool) => {
            let bytes = std::process::Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("running {tool}"))?;
            anyhow::ensure!(
                bytes.status.success(),
                "{tool} -dc {} failed",
                path.display()
            );
            fs::write(&target, bytes.stdout)?;
        }
    }
    Ok(name)
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dependencies load before what needs them, each once; a module in
    /// modules.builtin is skipped; one neither listed nor built in is an
    /// error.
    #[test]
    fn modules_load_after_their_dependencies() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-modules-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/fs/netfs/netfs.ko.xz:\n\
             kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/fs/overlayfs/overlay.ko.xz:\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let order = load_order(&dir).unwrap();
        assert_eq!(
            order,
            [
                "kernel/fs/netfs/netfs.ko.xz",
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
                "kernel/fs/overlayfs/overlay.ko.xz",
            ]
        );
        fs::write(dir.join("modules.builtin"), "").unwrap();
        assert!(load_order(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
