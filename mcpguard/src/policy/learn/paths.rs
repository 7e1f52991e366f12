//! How observed files become `[filesystem]` rules: the narrowest directory
//! that holds what the server used, never a credential store, never `/`,
//! `~` or a shared container such as `~/.local/share` wholesale, and never
//! a single file that
//! a rename replaced during the run (Landlock binds a rule to the inode,
//! so the rule would stop matching the file).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    path::{Component, Path, PathBuf},
};

/// Below `$HOME`, these are never proposed: credentials and keys.
pub const SECRET_DIRS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".netrc",
    ".docker",
    ".kube",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".config/gh",
    ".config/gcloud",
    ".config/hub",
    ".azure",
    ".password-store",
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".pki",
    ".mozilla",
    ".thunderbird",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".var/app",
    "snap",
];

/// Below `$HOME`, directories shared by many programs: proposed only
/// through a subdirectory, never wholesale.
const CONTAINERS: &[&str] = &[
    ".local",
    ".local/share",
    ".local/state",
    ".local/lib",
    ".local/bin",
    ".config",
    ".cache",
];

/// System directories whose contents are collapsed to the directory itself.
/// (Not /tmp: a policy's "/tmp" is the server's own empty one, so files
/// found there are kept by their directory.)
const WHOLE_DIRS: &[&str] = &["/etc/ssl", "/usr/share/zoneinfo"];

/// System trees generalised to their first levels (`/usr/lib`, `/lib`):
/// code and data every program shares, not the user's.
const SYSTEM_TREES: &[(&str, usize)] = &[
    ("/usr", 2),
    ("/lib", 1),
    ("/lib64", 1),
    ("/bin", 1),
    ("/sbin", 1),
    ("/opt", 2),
];

/// Directories every server gets its own empty copy of (the mount fence):
/// naming one grants that private copy, never the host's, so a file
/// created right in them is proposed through the directory.
const PRIVATE_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// Sibling directories of one parent beyond which the parent is proposed
/// instead (caches keyed by hashes would otherwise give endless lists).
const MAX_SIBLINGS: usize = 4;

/// A path as a policy writes it: `~/...` below `home`.
pub fn show(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".into(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Why a path is never proposed, if it is not.
pub fn refused(path: &Path, home: &Path) -> Option<String> {
    if path == Path::new("/") {
        return Some("/: the whole filesystem is never proposed".into());
    }
    if let Ok(rest) = path.strip_prefix(home) {
        let rest_s = rest.to_string_lossy();
        if rest_s.is_empty() {
            return Some("~ itself: all of $HOME is never proposed".into());
        }
        if SECRET_DIRS
            .iter()
            .any(|d| rest_s == *d || rest_s.starts_with(&format!("{d}/")))
        {
            return Some(format!("{}: a credential store", show(path, home)));
        }
    }
    None
}

/// Whether a directory may not be proposed as such (though files and
/// directories below it may).
fn too_wide(dir: &Path, home: &Path) -> bool {
    if dir == Path::new("/") || dir == home || !dir.starts_with("/") {
        return true;
    }
    if PRIVATE_DIRS.iter().any(|p| dir == Path::new(p)) {
        return false;
    }
    if let Ok(rest) = dir.strip_prefix(home) {
        return CONTAINERS.iter().any(|c| rest == Path::new(c));
    }
    // Top-level system directories (/etc, /usr, /home, /var, ...).
    dir.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
        < 2
}

/// The first `n` normal components of `path` (after the root).
fn prefix(path: &Path, n: usize) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .take(n)
    {
        out.push(c);
    }
    out
}

/// What rule covers an observed path: a system tree, a per-process /proc
/// entry, the directory itself (for a directory), or the directory the
/// file is in, unless that is too wide (then the file itself, unless a
/// rename replaced it). `dir`: the path is known to be a directory (it may
/// be gone by now).
pub fn generalise(
    path: &Path,
    home: &Path,
    replaced: &BTreeSet<PathBuf>,
    dir: bool,
) -> Result<PathBuf, String> {
    if let Some(why) = refused(path, home) {
        return Err(why);
    }
    if let Some(w) = WHOLE_DIRS.iter().find(|w| path.starts_with(w)) {
        return Ok(PathBuf::from(w));
    }
    let s = path.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/proc/") {
        let first = rest.split('/').next().unwrap_or("");
        let per_process = first.chars().all(|c| c.is_ascii_digit()) || first.ends_with("self");
        return Ok(if per_process && !first.is_empty() {
            PathBuf::from("/proc/self")
        } else {
            path.to_owned()
        });
    }
    if !path.starts_with(home) {
        if let Some((_, depth)) = SYSTEM_TREES.iter().find(|(r, _)| path.starts_with(r)) {
            return Ok(prefix(path, *depth));
        }
        // Single files in /etc, /dev, /run, /sys: each one is a decision.
        if ["/etc/", "/dev/", "/sys/", "/run/"]
            .iter()
            .any(|d| s.starts_with(d))
            && !PRIVATE_DIRS.iter().any(|p| path.starts_with(p))
            && !replaced.contains(path)
        {
            return Ok(path.to_owned());
        }
    }
    if dir || path.is_dir() {
        return if too_wide(path, home) {
            Err(format!("{}: too wide a directory", show(path, home)))
        } else {
            Ok(path.to_owned())
        };
    }
    let dir = super::parent(path);
    if !too_wide(&dir, home) {
        return Ok(dir);
    }
    if replaced.contains(path) {
        return Err(format!(
            "{}: replaced by a rename during the run, so a rule on the file would stop \
             matching, and its directory {} is too wide to propose",
            show(path, home),
            show(&dir, home)
        ));
    }
    Ok(path.to_owned())
}

/// Keep only paths no other listed path contains, after folding more than
/// [`MAX_SIBLINGS`] sibling directories into their parent (when that parent
/// is not too wide and not refused).
pub fn minimal(paths: BTreeSet<PathBuf>, home: &Path) -> Vec<PathBuf> {
    let mut paths = paths;
    loop {
        let mut children: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for p in &paths {
            if let Some(parent) = p.parent() {
                *children.entry(parent.to_owned()).or_default() += 1;
            }
        }
        let fold: Vec<PathBuf> = children
            .into_iter()
            .filter(|(dir, n)| {
                *n > MAX_SIBLINGS && !too_wide(dir, home) && refused(dir, home).is_none()
            })
            .map(|(dir, _)| dir)
            .collect();
        if fold.is_empty() {
            break;
        }
        paths = paths
            .into_iter()
            .map(
                |p| match fold.iter().find(|d| p.parent() == Some(d.as_path())) {
                    Some(d) => d.clone(),
                    None => p,
                },
            )
            .collect();
    }
    let all: Vec<PathBuf> = paths.into_iter().collect();
    all.iter()
        .filter(|p| !all.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect()
}

/// The programs the kernel opens to run `file`: its `#!` interpreter, or
/// its ELF interpreter (the dynamic loader). Landlock checks the execute
/// right on those too, though no exec record names them.
pub fn interpreters(file: &Path) -> Vec<PathBuf> {
    let mut head = [0u8; 4096];
    let n = match std::fs::File::open(file).and_then(|mut f| f.read(&mut head)) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        return line
            .split_whitespace()
            .next()
            .map(|i| super::with_target(PathBuf::from(i)))
            .unwrap_or_default();
    }
    elf_interp(head)
        .map(|i| super::with_target(PathBuf::from(i)))
        .unwrap_or_default()
}

/// `PT_INTERP` of a 64-bit little-endian ELF file, from its first bytes.
fn elf_interp(head: &[u8]) -> Option<String> {
    const PT_INTERP: u32 = 3;
    if head.get(..4)? != b"\x7fELF" || *head.get(4)? != 2 || *head.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?) as usize);
    let phoff = u64_at(0x20)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != PT_INTERP {
            return None;
        }
        let (off, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
        let name = head.get(off..off + size)?;
        let name = name.split(|b| *b == 0).next()?;
        Some(String::from_utf8_lossy(name).into_owned())
    })
}

/// File names tools usually replace by writing a new file and renaming it
/// over the old one: dotfiles, histories, lock and state files.
const USUALLY_REPLACED: &[&str] = &[
    ".gitconfig",
    ".viminfo",
    ".lesshst",
    ".python_history",
    ".node_repl_history",
    ".bash_history",
    ".zsh_history",
    ".wget-hsts",
    ".Xauthority",
    "known_hosts",
    "resolv.conf",
    "ld.so.cache",
];

/// Name endings of lock and state files, replaced the same way.
const USUALLY_REPLACED_ENDINGS: &[&str] = &[".lock", ".tmp", ".state", ".json"];

/// Whether a single-file rule names a file tools usually replace.
pub fn usually_replaced(rule: &str) -> bool {
    let name = rule.rsplit('/').next().unwrap_or(rule);
    USUALLY_REPLACED.contains(&name)
        || USUALLY_REPLACED_ENDINGS
            .iter()
            .any(|e| name.len() > e.len() && name.ends_with(e))
}
