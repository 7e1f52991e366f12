//! Whole-file writes that a reader never sees half done: the bytes go to a
//! temporary file in the target's directory (created private, mode 0600,
//! never through a symlink), get their owner and mode, are synced, and are
//! then renamed into place. A failed write leaves no temporary file behind.
//!
//! Used by `wrap` (client configs, backups, starter policies), `install`
//! (the daemon's files) and the MCP tool pins.

use std::{
    ffi::OsString,
    fs::{self, File, Metadata, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use tempfile::NamedTempFile;

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

/// Replaces `path` with a file holding `bytes`, atomically. `path` itself is
/// replaced: if it is a symlink, the link is, not its target.
pub fn replace(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<()> {
    temp_beside(path, bytes, own)?
        .persist(path)
        .map_err(|e| e.error)?;
    // Make the rename itself durable; a failure here loses nothing that is
    // not already on disk, so it is not worth failing the write.
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Creates `path` with `bytes` unless a file (or symlink) of that name
/// exists, never showing it half written. Returns whether it was created.
pub fn create_once(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<bool> {
    match temp_beside(path, bytes, own)?.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some file systems can neither rename without replacing nor
        // hard-link; exclusive creation still never overwrites.
        Err(_) => write_new(path, bytes, own),
    }
}

/// Creates `path` with `bytes` unless it exists (written in place, so a
/// crash can leave it short). Returns whether it was created.
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

/// A temporary file next to `path` holding `bytes` with `own`; removed
/// when dropped unless persisted.
fn temp_beside(path: &Path, bytes: &[u8], own: Ownership) -> io::Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".mcpguard-tmp.");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut(), bytes, own)?;
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

    fn own(mode: u32) -> Ownership {
        Ownership { mode, owner: None }
    }

    fn names(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replace_sets_mode_and_replaces_a_symlink_itself() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let real = dir.join("real");
        fs::write(&real, "old").expect("write");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        replace(&link, b"new", own(0o640)).expect("replace");
        assert!(fs::symlink_metadata(&link).expect("lstat").is_file());
        assert_eq!(fs::read_to_string(&real).expect("read"), "old");
        assert_eq!(fs::read_to_string(&link).expect("read"), "new");
        assert_eq!(fs::metadata(&link).expect("stat").mode() & 0o7777, 0o640);
        assert_eq!(names(dir), ["link", "real"], "no temporary files left");
    }

    #[test]
    fn a_failed_replace_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        fs::create_dir(dir.join("taken")).expect("mkdir");
        fs::write(dir.join("taken/x"), "").expect("write");
        assert!(replace(&dir.join("taken"), b"new", own(0o600)).is_err());
        assert_eq!(names(dir), ["taken"], "no temporary files left");
    }

    #[test]
    fn create_once_never_overwrites() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let file = dir.join("f");
        assert!(create_once(&file, b"first", own(0o644)).expect("create"));
        assert!(!create_once(&file, b"second", own(0o600)).expect("create"));
        assert_eq!(fs::read_to_string(&file).expect("read"), "first");
        assert_eq!(fs::metadata(&file).expect("stat").mode() & 0o777, 0o644);
        assert_eq!(names(dir), ["f"], "no temporary files left");
    }
}
