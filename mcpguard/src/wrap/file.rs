//! File handling for `wrap`/`unwrap`: one-time backups, atomic replacement
//! that keeps the file's mode (and owner, when run as root), and new files
//! that are never overwritten.
//!
//! MCP client configs hold API keys (`~/.claude.json` is mode 0600), so
//! every file is created private and only then given the original's mode.

use std::{
    ffi::OsString,
    fs::{self, File, Metadata, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Suffix of the backup `wrap` keeps next to a config file.
pub const BACKUP_SUFFIX: &str = ".mcpguard-backup";

/// Owner and mode a written file should get.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    pub mode: u32,
    /// `Some` only when running as root, which alone can give files away.
    pub owner: Option<(u32, u32)>,
}

impl Ownership {
    /// The ownership of an existing file, to copy onto its replacement.
    pub fn of(meta: &Metadata) -> Ownership {
        Ownership {
            mode: meta.mode() & 0o7777,
            owner: running_as_root().then(|| (meta.uid(), meta.gid())),
        }
    }
}

pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `path` with [`BACKUP_SUFFIX`] appended to its file name.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(BACKUP_SUFFIX);
    path.with_file_name(name)
}

/// Keeps `bytes` (the file's original content) as `path`'s backup unless a
/// backup already exists: the first backup is the pre-mcpguard file and
/// must survive later runs. Returns whether a backup was written.
pub fn backup_once(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<bool> {
    let backup = backup_path(path);
    if backup.symlink_metadata().is_ok() {
        return Ok(false);
    }
    // Written under a temporary name, then hard-linked into place: linking
    // fails if the name exists, so a backup is never overwritten, and it is
    // never seen half-written.
    let tmp = write_temp(&backup, bytes, own)?;
    let linked = fs::hard_link(&tmp, &backup);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some file systems cannot hard-link; exclusive creation still never
        // overwrites.
        Err(_) => write_new(&backup, bytes, own),
    }
}

/// Replaces `path`'s content with `bytes` atomically (a temporary file in
/// the same directory, renamed over it). A symlinked config stays a
/// symlink: its target is replaced.
pub fn replace(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<()> {
    let target = fs::canonicalize(path)?;
    let tmp = write_temp(&target, bytes, own)?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; a failure here loses nothing that is
    // not already on disk, so it is not worth failing the command.
    if let Some(dir) = target.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Creates `path` with `bytes` unless it exists. Returns whether it was
/// created.
pub fn write_new(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    let written = fill(&mut file, bytes, own);
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written.map(|()| true)
}

/// Creates `dir` and its missing parents, giving the ones it creates to
/// `owner` (when running as root for another user).
pub fn create_dirs(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    if let Some((uid, gid)) = owner {
        for d in missing {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to a new temporary file next to `near` and returns its
/// path.
fn write_temp(near: &Path, bytes: &[u8], own: Ownership) -> io::Result<PathBuf> {
    let mut name = OsString::from(".");
    name.push(near.file_name().unwrap_or_default());
    name.push(format!(".mcpguard-tmp.{}", std::process::id()));
    let tmp = near.with_file_name(name);
    // A leftover from a crashed run with the same pid is ours to replace.
    let _ = fs::remove_file(&tmp);
    if !write_new(&tmp, bytes, own)? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} appeared while writing", tmp.display()),
        ));
    }
    Ok(tmp)
}

fn fill(file: &mut File, bytes: &[u8], own: Ownership) -> io::Result<()> {
    file.write_all(bytes)?;
    // Owner before mode: chown clears set-id bits.
    if let Some((uid, gid)) = own.owner {
        std::os::unix::fs::fchown(&*file, Some(uid), Some(gid))?;
    }
    file.set_permissions(Permissions::from_mode(own.mode))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcpguard-file-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn own(mode: u32) -> Ownership {
        Ownership { mode, owner: None }
    }

    #[test]
    fn replace_keeps_mode_and_symlinks() {
        let dir = tmp_dir("replace");
        let real = dir.join("real.json");
        fs::write(&real, "old").expect("write");
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        replace(&link, b"new", own(0o640)).expect("replace");
        assert!(fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).expect("read"), "new");
        let mode = fs::metadata(&real).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn backup_is_written_once() {
        let dir = tmp_dir("backup");
        let file = dir.join("c.json");
        assert!(backup_once(&file, b"first", own(0o600)).expect("backup"));
        assert!(!backup_once(&file, b"second", own(0o600)).expect("backup"));
        let backup = backup_path(&file);
        assert_eq!(backup, dir.join("c.json.mcpguard-backup"));
        assert_eq!(fs::read_to_string(&backup).expect("read"), "first");
        assert_eq!(fs::metadata(&backup).expect("stat").mode() & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
