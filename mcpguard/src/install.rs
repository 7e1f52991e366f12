//! `mcpguard install` / `uninstall`: put the binary, the systemd unit, the
//! shipped policies and the daemon's directories in place (below `--root`,
//! for packaging or tests), and take the binary and unit away again.
//!
//! Installing is idempotent: files whose contents already match are left
//! alone, and a policy an administrator changed is never overwritten. The
//! unit and the shipped policies are compiled into the binary, so install
//! works from any directory. Everything is written root-owned, through a
//! temporary file and a rename, so a running daemon never sees half a file.

use std::{
    fmt, fs, io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::atomic_file::{self, Ownership};

/// The systemd unit, as shipped (its ExecStart= is rewritten on install).
pub const UNIT: &str = include_str!("../../packaging/systemd/mcpguard.service");

/// The policies in the repository's `policies/`, by file name.
pub const POLICIES: &[(&str, &str)] = &[
    (
        "everything.toml",
        include_str!("../../policies/everything.toml"),
    ),
    ("fetch.toml", include_str!("../../policies/fetch.toml")),
    (
        "filesystem.toml",
        include_str!("../../policies/filesystem.toml"),
    ),
    ("git.toml", include_str!("../../policies/git.toml")),
    ("github.toml", include_str!("../../policies/github.toml")),
    ("memory.toml", include_str!("../../policies/memory.toml")),
    (
        "postgres.toml",
        include_str!("../../policies/postgres.toml"),
    ),
    ("time.toml", include_str!("../../policies/time.toml")),
];

/// Where the unit goes, below the root.
pub const UNIT_PATH: &str = "etc/systemd/system/mcpguard.service";
/// The default `--prefix`.
pub const DEFAULT_PREFIX: &str = "/usr/local";

/// The daemon's own directories: path below the root, and mode.
const OWN_DIRS: &[(&str, u32)] = &[
    ("etc/mcpguard", 0o755),
    // Users read policies: `mcpguard run` reads one as the calling user.
    ("etc/mcpguard/policies", 0o755),
    // Secret files must sit in directories only root can write or read.
    ("etc/mcpguard/secrets", 0o700),
    // Helpers minting `[secrets]`: root's code, only root reads or runs it.
    ("etc/mcpguard/minters", 0o700),
    // Tool pins.
    ("var/lib/mcpguard", 0o700),
    // The audit log names every file a server opened.
    ("var/log/mcpguard", 0o700),
];

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--prefix {0} must be an absolute path")]
    RelativePrefix(PathBuf),
    #[error("cannot find the running mcpguard binary: {0}")]
    CurrentExe(#[source] io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What happened to one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    /// An existing policy differs from the shipped one: it is the admin's.
    Kept,
    /// Mode or owner corrected (the contents were right).
    Fixed(String),
    Removed,
    /// Nothing there to remove.
    Absent,
    /// Left in place on uninstall.
    Left,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Created => f.write_str("created"),
            Change::Updated => f.write_str("updated"),
            Change::Unchanged => f.write_str("unchanged"),
            Change::Kept => f.write_str("kept"),
            Change::Fixed(_) => f.write_str("fixed"),
            Change::Removed => f.write_str("removed"),
            Change::Absent => f.write_str("absent"),
            Change::Left => f.write_str("left"),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The path as written (below the root).
    pub path: PathBuf,
    pub change: Change,
    /// Why, when it needs saying.
    pub note: Option<String>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<10} {}", self.change.to_string(), self.path.display())?;
        let what = match &self.change {
            Change::Fixed(what) => Some(what),
            _ => None,
        };
        match (what, &self.note) {
            (Some(what), Some(note)) => write!(f, " ({what}; now {note})"),
            (Some(what), None) => write!(f, " ({what})"),
            (None, Some(note)) => write!(f, " ({note})"),
            (None, None) => Ok(()),
        }
    }
}

/// Where things go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Everything is written below this (`/` on a real install).
    pub root: PathBuf,
    /// The binary goes to `<prefix>/bin/mcpguard`; absolute.
    pub prefix: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, prefix: impl Into<PathBuf>) -> Result<Self, InstallError> {
        let prefix = prefix.into();
        if !prefix.is_absolute() {
            return Err(InstallError::RelativePrefix(prefix));
        }
        Ok(Layout {
            root: root.into(),
            prefix,
        })
    }

    /// `abs` (a path on the installed system) below the root.
    pub fn at(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// The binary's path on the installed system (what ExecStart= names).
    pub fn binary(&self) -> PathBuf {
        self.prefix.join("bin/mcpguard")
    }
}

/// The unit with ExecStart= running `binary`.
pub fn unit_text(binary: &Path) -> String {
    let mut out = String::with_capacity(UNIT.len());
    for line in UNIT.lines() {
        match line.strip_prefix("ExecStart=") {
            Some(rest) => {
                let args = rest.split_once(' ').map_or("", |(_, args)| args);
                out.push_str(&format!("ExecStart={} {args}", binary.display()));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Install the binary at `exe` and everything else into `layout`.
pub fn install(layout: &Layout, exe: &Path) -> Result<Vec<Step>, InstallError> {
    let mut steps = Vec::new();
    let binary = layout.at(layout.binary());
    let exe_bytes = fs::read(exe).map_err(io_err(exe))?;
    if let Some(dir) = binary.parent() {
        make_parents(dir)?;
    }
    steps.push(put_file(&binary, &exe_bytes, 0o755)?);

    let unit = layout.at(UNIT_PATH);
    if let Some(dir) = unit.parent() {
        make_parents(dir)?;
    }
    let mut step = put_file(&unit, unit_text(&layout.binary()).as_bytes(), 0o644)?;
    if step.change == Change::Updated {
        step.note = Some("local changes belong in a drop-in: systemctl edit mcpguard".into());
    }
    steps.push(step);

    for (dir, mode) in OWN_DIRS {
        steps.push(own_dir(&layout.at(dir), *mode)?);
    }
    let policies = layout.at("etc/mcpguard/policies");
    for (name, text) in POLICIES {
        let path = policies.join(name);
        match fs::read(&path) {
            Ok(theirs) if theirs != text.as_bytes() => steps.push(Step {
                path,
                change: Change::Kept,
                note: Some(
                    "it differs from the shipped version, so it is yours; \
                     delete it and install again for the shipped one"
                        .into(),
                ),
            }),
            Ok(_) => steps.push(put_file(&path, text.as_bytes(), 0o644)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                steps.push(put_file(&path, text.as_bytes(), 0o644)?)
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(steps)
}

/// Remove the binary and the unit from below `root`, leaving configuration,
/// state and logs. The binary is the one the installed unit runs, else
/// `<prefix>/bin/mcpguard` (default prefix [`DEFAULT_PREFIX`]).
pub fn uninstall(root: &Path, prefix: Option<&Path>) -> Result<Vec<Step>, InstallError> {
    let layout = Layout::new(root, prefix.unwrap_or(Path::new(DEFAULT_PREFIX)))?;
    let unit = layout.at(UNIT_PATH);
    let binary = match prefix {
        Some(_) => layout.binary(),
        None => fs::read_to_string(&unit)
            .ok()
            .and_then(|text| exec_start_binary(&text))
            .unwrap_or_else(|| layout.binary()),
    };
    let mut steps = vec![remove(&layout.at(binary))?, remove(&unit)?];
    for (dir, note) in [
        ("etc/mcpguard", "policies, secrets and minters"),
        ("var/lib/mcpguard", "tool pins"),
        ("var/log/mcpguard", "the audit log"),
    ] {
        let path = layout.at(dir);
        if path.exists() {
            steps.push(Step {
                path,
                change: Change::Left,
                note: Some(format!("{note}; remove it yourself if you want it gone")),
            });
        }
    }
    Ok(steps)
}

/// The binary an installed unit's ExecStart= runs, if it is an mcpguard.
fn exec_start_binary(unit: &str) -> Option<PathBuf> {
    let rest = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
    let path = PathBuf::from(rest.split_whitespace().next()?);
    (path.is_absolute() && path.ends_with("bin/mcpguard")).then_some(path)
}

fn remove(path: &Path) -> Result<Step, InstallError> {
    let change = match fs::remove_file(path) {
        Ok(()) => Change::Removed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Change::Absent,
        Err(e) => return Err(io_err(path)(e)),
    };
    Ok(Step {
        path: path.to_path_buf(),
        change,
        note: None,
    })
}

/// Create missing parent directories (0755, root's); existing ones are the
/// system's and left as they are.
fn make_parents(dir: &Path) -> Result<(), InstallError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_parents(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
    std::os::unix::fs::chown(dir, Some(0), Some(0)).map_err(io_err(dir))
}

/// One of the daemon's directories: created, or corrected to root and
/// `mode`.
fn own_dir(dir: &Path, mode: u32) -> Result<Step, InstallError> {
    let created = !dir.exists();
    if created {
        if let Some(parent) = dir.parent() {
            make_parents(parent)?;
        }
        fs::create_dir(dir).map_err(io_err(dir))?;
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(io_err(dir)(io::Error::other(
            "exists and is not a directory",
        )));
    }
    let fixed = fix_owner_and_mode(dir, &meta, mode)?;
    let change = match (created, fixed) {
        (true, _) => Change::Created,
        (false, Some(what)) => Change::Fixed(what),
        (false, None) => Change::Unchanged,
    };
    Ok(Step {
        path: dir.to_path_buf(),
        change,
        note: Some(format!("{mode:04o} root")),
    })
}

/// Make `path` root's with `mode`; says what it changed, if anything.
fn fix_owner_and_mode(
    path: &Path,
    meta: &fs::Metadata,
    mode: u32,
) -> Result<Option<String>, InstallError> {
    let mut fixed = Vec::new();
    if meta.uid() != 0 || meta.gid() != 0 {
        std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(io_err(path))?;
        fixed.push(format!("owner {}:{} -> root", meta.uid(), meta.gid()));
    }
    let old = meta.mode() & 0o7777;
    if old != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
        fixed.push(format!("mode {old:04o} -> {mode:04o}"));
    }
    Ok((!fixed.is_empty()).then(|| fixed.join(", ")))
}

/// Write `bytes` to `path` (root's, `mode`) unless it already holds them.
fn put_file(path: &Path, bytes: &[u8], mode: u32) -> Result<Step, InstallError> {
    let step = |change| Step {
        path: path.to_path_buf(),
        change,
        note: Some(format!("{mode:04o} root")),
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && fs::read(path).map_err(io_err(path))? == bytes => {
            Ok(step(match fix_owner_and_mode(path, &meta, mode)? {
                Some(what) => Change::Fixed(what),
                None => Change::Unchanged,
            }))
        }
        Ok(_) => {
            write_atomic(path, bytes, mode)?;
            Ok(step(Change::Updated))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(path, bytes, mode)?;
            Ok(step(Change::Created))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replace `path` with root's file holding `bytes`: a reader (or a running
/// binary) sees the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let own = Ownership {
        mode,
        owner: Some((0, 0)),
    };
    atomic_file::replace(path, bytes, own).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repository_policy_is_shipped_verbatim() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
        let mut on_disk: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let shipped: Vec<&str> = POLICIES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, shipped, "add new policies/*.toml to POLICIES");
        for (name, text) in POLICIES {
            assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), *text);
        }
    }

    #[test]
    fn unit_text_points_exec_start_at_the_binary_and_keeps_the_rest() {
        let text = unit_text(Path::new("/opt/mg/bin/mcpguard"));
        let exec: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(exec, ["ExecStart=/opt/mg/bin/mcpguard daemon"]);
        assert_eq!(text.lines().count(), UNIT.lines().count());
        assert!(text.contains("Type=notify\n"));
        assert_eq!(
            exec_start_binary(&text),
            Some(PathBuf::from("/opt/mg/bin/mcpguard"))
        );
        assert_eq!(exec_start_binary("ExecStart=/bin/sh -c x\n"), None);
    }

    #[test]
    fn layout_puts_absolute_paths_below_the_root() {
        let l = Layout::new("/tmp/r", "/usr/local").unwrap();
        assert_eq!(l.at("/etc/mcpguard"), PathBuf::from("/tmp/r/etc/mcpguard"));
        assert_eq!(
            l.at(l.binary()),
            PathBuf::from("/tmp/r/usr/local/bin/mcpguard")
        );
        assert!(matches!(
            Layout::new("/", "usr"),
            Err(InstallError::RelativePrefix(_))
        ));
    }
}
