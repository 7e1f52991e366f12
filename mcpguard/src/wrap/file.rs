//! File handling for `wrap`/`unwrap`: one-time backups and replacement that
//! keeps the file's mode (and owner, when run as root) and its symlink; the
//! writes themselves are [`crate::atomic_file`]'s.
//!
//! MCP client configs hold API keys (`~/.claude.json` is mode 0600), so
//! every file is created private and only then given the original's mode.

use std::{
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
};

use crate::atomic_file::{self, Ownership};

/// Suffix of the backup `wrap` keeps next to a config file.
pub const BACKUP_SUFFIX: &str = ".mcpguard-backup";

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
    atomic_file::create_once(&backup, bytes, own)
}

/// Replaces `path`'s content with `bytes` atomically (a temporary file in
/// the same directory, renamed over it). A symlinked config stays a
/// symlink: its target is replaced.
pub fn replace(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<()> {
    atomic_file::replace(&fs::canonicalize(path)?, bytes, own)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn own(mode: u32) -> Ownership {
        Ownership { mode, owner: None }
    }

    #[test]
    fn replace_keeps_mode_and_symlinks() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
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
        let names: Vec<_> = fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }

    #[test]
    fn backup_is_written_once() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let file = dir.join("c.json");
        assert!(backup_once(&file, b"first", own(0o600)).expect("backup"));
        assert!(!backup_once(&file, b"second", own(0o600)).expect("backup"));
        let backup = backup_path(&file);
        assert_eq!(backup, dir.join("c.json.mcpguard-backup"));
        assert_eq!(fs::read_to_string(&backup).expect("read"), "first");
        assert_eq!(fs::metadata(&backup).expect("stat").mode() & 0o777, 0o600);
    }
}
