//! Reading the secrets a policy injects, with the checks that keep one user
//! from reading what is not theirs through the daemon.
//!
//! The daemon runs as root and the policy comes from the user, so a secret
//! file may only come from the daemon's secrets directory (default
//! `/etc/mcpguard/secrets`): files directly in it are for every user of the
//! daemon, files in `users/<name>/` only for that user. Every file must be
//! a regular file owned by root and unreadable by group and others, in a
//! directory only root can write. Credentials come from the daemon's own
//! systemd `$CREDENTIALS_DIRECTORY` and are for every user. Errors name the
//! variable and the path, never the value.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Component, Path, PathBuf},
};

use thiserror::Error;

use crate::{
    mcp::redact::MIN_SECRET_LEN,
    policy::{Secret, SecretSource},
};

/// Largest secret value accepted (tokens and keys, not files).
pub const MAX_SECRET_BYTES: u64 = 4096;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("secret {env}: {} is outside the daemon's secrets directory {}", path.display(), dir.display())]
    OutsideDir {
        env: String,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("secret {env}: {} belongs to another user's secrets", path.display())]
    OtherUser { env: String, path: PathBuf },
    #[error("secret {env}: {}: {source}", path.display())]
    Io {
        env: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {env}: {} must be a regular file owned by root with no group or other access (chmod 600)", path.display())]
    Unsafe { env: String, path: PathBuf },
    #[error("secret {env}: directory {} must be owned by root and writable only by root", dir.display())]
    UnsafeDir { env: String, dir: PathBuf },
    #[error("secret {env}: {} is larger than {MAX_SECRET_BYTES} bytes", path.display())]
    TooLarge { env: String, path: PathBuf },
    #[error("secret {env}: the value is shorter than {MIN_SECRET_LEN} bytes, too short to redact reliably")]
    TooShort { env: String },
    #[error("secret {env}: credential {name:?} needs the daemon to run with systemd credentials ($CREDENTIALS_DIRECTORY is not set)")]
    NoCredentials { env: String, name: String },
}

/// Where secrets may come from, as configured on the daemon.
pub struct SecretStore {
    pub dir: PathBuf,
    pub credentials: Option<PathBuf>,
}

impl SecretStore {
    /// Read every stored secret of a policy for `user`: (variable, value)
    /// pairs. Minted ones are left out: they are made per launch
    /// ([`super::mint`]).
    pub fn load(
        &self,
        secrets: &[Secret],
        user: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SecretError> {
        secrets
            .iter()
            .filter_map(|s| {
                let value = match &s.source {
                    SecretSource::File(path) => self.file(&s.env, path, user),
                    SecretSource::Credential(name) => self.credential(&s.env, name),
                    SecretSource::Mint { .. } => return None,
                };
                Some(value.map(|v| (s.env.clone(), v)))
            })
            .collect()
    }

    fn credential(&self, env: &str, name: &str) -> Result<Vec<u8>, SecretError> {
        let dir = self
            .credentials
            .as_ref()
            .ok_or_else(|| SecretError::NoCredentials {
                env: env.to_owned(),
                name: name.to_owned(),
            })?;
        read_checked(env, &dir.join(name))
    }

    fn file(&self, env: &str, path: &Path, user: &str) -> Result<Vec<u8>, SecretError> {
        let io = |path: &Path, source| SecretError::Io {
            env: env.to_owned(),
            path: path.to_owned(),
            source,
        };
        let dir = self.dir.canonicalize().map_err(|e| io(&self.dir, e))?;
        // Resolve symlinks first so the containment check is about the
        // file that will be read.
        let real = path.canonicalize().map_err(|e| io(path, e))?;
        let rel = real
            .strip_prefix(&dir)
            .map_err(|_| SecretError::OutsideDir {
                env: env.to_owned(),
                path: path.to_owned(),
                dir: self.dir.clone(),
            })?;
        let parts: Vec<Component> = rel.components().collect();
        match parts.as_slice() {
            [Component::Normal(_)] => {}
            [Component::Normal(users), Component::Normal(name), Component::Normal(_)]
                if *users == "users" =>
            {
                if *name != user {
                    return Err(SecretError::OtherUser {
                        env: env.to_owned(),
                        path: path.to_owned(),
                    });
                }
            }
            _ => {
                return Err(SecretError::OutsideDir {
                    env: env.to_owned(),
                    path: path.to_owned(),
                    dir: self.dir.clone(),
                })
            }
        }
        root_only_dirs(&real, &dir).map_err(|bad| match bad {
            BadDir::Io(p, e) => io(&p, e),
            BadDir::Unsafe(dir) => SecretError::UnsafeDir {
                env: env.to_owned(),
                dir,
            },
        })?;
        read_checked(env, &real)
    }
}

/// A directory between a file and its top directory that fails
/// [`root_only_dirs`].
pub(super) enum BadDir {
    Io(PathBuf, std::io::Error),
    /// Not owned by root, or writable by group or others.
    Unsafe(PathBuf),
}

/// Every directory from `file`'s parent up to `top` (both resolved, `file`
/// below `top`) must be owned by root and writable by root alone, or
/// someone else could swap the file.
pub(super) fn root_only_dirs(file: &Path, top: &Path) -> Result<(), BadDir> {
    let mut d = file.parent();
    while let Some(p) = d {
        let meta = std::fs::metadata(p).map_err(|e| BadDir::Io(p.to_owned(), e))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(BadDir::Unsafe(p.to_owned()));
        }
        if p == top {
            break;
        }
        d = p.parent();
    }
    Ok(())
}

/// Open without following a final symlink, check ownership and mode on the
/// open file, read a bounded amount, trim trailing newlines.
fn read_checked(env: &str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let io = |source| SecretError::Io {
        env: env.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(SecretError::Unsafe {
            env: env.to_owned(),
            path: path.to_owned(),
        });
    }
    let mut value = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut value)
        .map_err(io)?;
    if value.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            env: env.to_owned(),
            path: path.to_owned(),
        });
    }
    while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        value.pop();
    }
    if value.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            env: env.to_owned(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    fn store() -> (SecretStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "mcpguard-secrets-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("users/alice")).unwrap();
        for d in [&dir, &dir.join("users"), &dir.join("users/alice")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        (
            SecretStore {
                dir: dir.clone(),
                credentials: None,
            },
            dir,
        )
    }

    fn put(path: &Path, value: &str, mode: u32) {
        fs::write(path, value).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn secret(path: &Path) -> Vec<Secret> {
        vec![Secret {
            env: "TOKEN".into(),
            source: SecretSource::File(path.to_owned()),
        }]
    }

    #[test]
    fn reads_shared_and_own_secrets_trimmed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "run as root (cargo xtask test)"
        );
        let (s, dir) = store();
        put(&dir.join("shared"), "shared-token-123\n", 0o600);
        put(&dir.join("users/alice/gh"), "alice-token-456", 0o400);
        assert_eq!(
            s.load(&secret(&dir.join("shared")), "bob").unwrap(),
            [("TOKEN".to_string(), b"shared-token-123".to_vec())]
        );
        assert_eq!(
            s.load(&secret(&dir.join("users/alice/gh")), "alice")
                .unwrap()[0]
                .1,
            b"alice-token-456"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_a_user_should_not_read() {
        let (s, dir) = store();
        put(&dir.join("users/alice/gh"), "alice-token-456", 0o600);
        put(&dir.join("readable"), "world-readable-1", 0o644);
        put(&dir.join("short"), "abc", 0o600);
        std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow-link")).unwrap();
        let err = |p: &Path, user| s.load(&secret(p), user).unwrap_err();
        assert!(matches!(
            err(&dir.join("users/alice/gh"), "bob"),
            SecretError::OtherUser { .. }
        ));
        assert!(matches!(
            err(&dir.join("readable"), "bob"),
            SecretError::Unsafe { .. }
        ));
        assert!(matches!(
            err(&dir.join("short"), "bob"),
            SecretError::TooShort { .. }
        ));
        assert!(matches!(
            err(Path::new("/etc/shadow"), "bob"),
            SecretError::OutsideDir { .. }
        ));
        assert!(matches!(
            err(&dir.join("shadow-link"), "bob"),
            SecretError::OutsideDir { .. }
        ));
        assert!(matches!(
            err(&dir.join("missing"), "bob"),
            SecretError::Io { .. }
        ));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        put(&dir.join("ok"), "fine-token-789", 0o600);
        assert!(matches!(
            err(&dir.join("ok"), "bob"),
            SecretError::UnsafeDir { .. }
        ));
        let msg = err(&dir.join("readable"), "bob").to_string();
        assert!(!msg.contains("world-readable-1"), "{msg}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
