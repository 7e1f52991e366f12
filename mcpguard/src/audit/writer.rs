//! The JSON Lines sink: appends [`AuditRecord`]s to the audit log.
//!
//! The log is root's (file 0640, directory 0750): it names every file a
//! server touched, which is itself sensitive. Records are buffered and the
//! daemon calls [`AuditWriter::flush`] after each ring-buffer batch, so a
//! reader sees whole lines with at most one batch of delay. The file is
//! opened `O_APPEND`, so `logrotate`'s `copytruncate` works; for
//! move-and-recreate rotation the daemon calls [`AuditWriter::reopen`].

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::AuditRecord;

const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot create audit log directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open audit log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot secure audit log {path} (owner root, mode 0640): {source}")]
    Secure { path: PathBuf, source: io::Error },
    #[error("cannot write to audit log {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Appends records to one JSON Lines file.
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
}

impl AuditWriter {
    /// Open (creating if needed) the log and its parent directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WriterError> {
        let path = path.as_ref().to_path_buf();
        let file = open_log(&path)?;
        Ok(AuditWriter {
            path,
            out: BufWriter::new(file),
            written: 0,
        })
    }

    /// Buffer one record as a line. Errors only when the buffer had to be
    /// written out and that failed.
    pub fn write(&mut self, rec: &AuditRecord) -> Result<(), WriterError> {
        let mut line = rec.to_json_line();
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .map_err(|source| self.write_error(source))?;
        self.written += 1;
        Ok(())
    }

    /// Hand everything buffered to the kernel (not an fsync).
    pub fn flush(&mut self) -> Result<(), WriterError> {
        self.out.flush().map_err(|source| self.write_error(source))
    }

    /// Flush, then open the path afresh: after the log was moved away by
    /// rotation, new records go to a new file at the configured path.
    pub fn reopen(&mut self) -> Result<(), WriterError> {
        self.flush()?;
        let file = open_log(&self.path)?;
        self.out = BufWriter::new(file);
        tracing::info!(path = %self.path.display(), "audit log reopened");
        Ok(())
    }

    /// Records written (buffered or flushed) since [`AuditWriter::open`].
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_error(&self, source: io::Error) -> WriterError {
        WriterError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Err(err) = self.out.flush() {
            tracing::error!(path = %self.path.display(), %err, "audit records lost at close");
        }
    }
}

fn open_log(path: &Path) -> Result<File, WriterError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| WriterError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| WriterError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    secure(&file, path).map_err(|source| WriterError::Secure {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file)
}

/// An existing log keeps its mode from creation, so a log left world-readable
/// or owned by someone else (e.g. created by hand) is fixed up here rather
/// than trusted. Group bits are left alone: an admin may grant a log group.
fn secure(file: &File, path: &Path) -> io::Result<()> {
    let meta = file.metadata()?;
    let root = nix::unistd::geteuid().is_root();
    if root && meta.uid() != 0 {
        tracing::warn!(path = %path.display(), uid = meta.uid(), "audit log not owned by root; taking it over");
        std::os::unix::fs::fchown(file, Some(0), Some(0))?;
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o007 != 0 || mode & 0o7000 != 0 {
        let fixed = mode & 0o770;
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), fixed = format!("{fixed:o}"), "audit log was accessible to others; tightening");
        file.set_permissions(std::fs::Permissions::from_mode(fixed))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{super::Body, *};

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcpguard-audit-writer-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(child: u32) -> AuditRecord {
        AuditRecord::new(
            Body::Fork { child_pid: child },
            None,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn creates_dir_and_file_with_modes_and_appends_lines() {
        let dir = scratch_dir("modes");
        let path = dir.join("sub/audit.jsonl");
        let mut w = AuditWriter::open(&path).unwrap();
        w.write(&record(1)).unwrap();
        w.write(&record(2)).unwrap();
        assert_eq!(w.written(), 2);
        w.flush().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines, [record(1).to_json_line(), record(2).to_json_line()]);
        assert!(text.ends_with('\n'));

        // umask can only remove bits, so check for nothing beyond the mode.
        let dmode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let fmode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(dmode & !DIR_MODE, 0, "dir mode {dmode:o}");
        assert_eq!(fmode & !FILE_MODE, 0, "file mode {fmode:o}");

        // A second writer appends instead of truncating.
        drop(w);
        let mut w = AuditWriter::open(&path).unwrap();
        w.write(&record(3)).unwrap();
        drop(w); // Drop flushes.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tightens_world_readable_existing_log() {
        let dir = scratch_dir("tighten");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let _w = AuditWriter::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = scratch_dir("reopen");
        let path = dir.join("audit.jsonl");
        let mut w = AuditWriter::open(&path).unwrap();
        w.write(&record(1)).unwrap();
        w.flush().unwrap();
        std::fs::rename(&path, dir.join("audit.jsonl.1")).unwrap();
        w.write(&record(2)).unwrap();
        w.reopen().unwrap();
        w.write(&record(3)).unwrap();
        w.flush().unwrap();
        let old = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            old.lines().count(),
            2,
            "buffered record goes to the old file"
        );
        assert_eq!(new.lines().collect::<Vec<_>>(), [record(3).to_json_line()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = scratch_dir("err");
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file where the parent directory should be.
        let blocker = dir.join("file");
        std::fs::write(&blocker, "").unwrap();
        let err = AuditWriter::open(blocker.join("audit.jsonl")).unwrap_err();
        assert!(matches!(err, WriterError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
