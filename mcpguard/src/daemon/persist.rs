//! `persist` records: every call of a guarded server that would create,
//! change or remove a persistence path ([`crate::policy::persist`]) gets
//! one, next to the call's own record, whether the launcher's read-only
//! binds refused it (`EROFS`, `EBUSY`), Landlock did (`EACCES`), or it
//! went through (a family the policy allows). Calls that create a name go
//! through the persistence fence, which writes their `persist` records
//! itself ([`super::persist_fence`]), as it writes their own records; the
//! executor's records are dropped ([`Watch::is_executor`]).
//!
//! Paths come from the records, so from the caller's memory at syscall
//! entry (`path_source: user`): a record names what the server asked for.
//! Relative paths follow each process's working directory as its records
//! show it (`Cwds`); a path relative to a directory fd is classified by
//! its own components only. A repository's `core.hooksPath` directory is
//! known once the launch helper reports it ([`Watch::add_hooks`]): a write
//! below it in the server's first moments, before that report arrives, has
//! its own record only (refused all the same).

use std::path::{Path, PathBuf};

use crate::{
    audit::{AuditRecord, Body, PathPair},
    policy::{
        learn::{normalise, Cwds},
        persist::{classify, PersistKind},
    },
};

/// One server's persistence watch.
pub struct Watch {
    /// `[filesystem] allow_persistence`.
    allow: Vec<PersistKind>,
    /// Directories named by `core.hooksPath`: `git_hooks` below them.
    hooks: Vec<PathBuf>,
    cwds: Cwds,
    /// The persistence fence's executor: its calls are the fence's, which
    /// writes their `persist` records itself, with the asking pid.
    executor: Option<u32>,
}

/// A path a call names, as recorded.
struct Named<'a> {
    path: &'a str,
    dirfd: Option<i32>,
}

impl Watch {
    /// The watch of a server launched in `cwd`.
    pub fn new(cwd: PathBuf, allow: Vec<PersistKind>) -> Self {
        Self {
            allow,
            hooks: Vec::new(),
            cwds: Cwds::new(cwd),
            executor: None,
        }
    }

    /// Paths below `dirs` are `git_hooks` from now on.
    pub fn add_hooks(&mut self, dirs: Vec<PathBuf>) {
        self.hooks.extend(dirs);
    }

    fn family(&self, path: &Path) -> Option<PersistKind> {
        classify(path).or_else(|| {
            (self.hooks.iter())
                .any(|h| path.starts_with(h))
                .then_some(PersistKind::GitHooks)
        })
    }

    /// Records of `pid` (the fence's executor) are the fence's: dropped.
    pub fn set_executor(&mut self, pid: u32) {
        self.executor = Some(pid);
    }

    /// Whether a record from `pid` is the fence executor's.
    pub fn is_executor(&self, pid: Option<u32>) -> bool {
        pid.is_some() && pid == self.executor
    }

    /// Takes one record of the server: the `persist` record it calls for,
    /// if any.
    pub fn observe(&mut self, rec: &AuditRecord) -> Option<AuditRecord> {
        self.cwds.follow(rec);
        let (call, result, errno, names, symlink) = writes(&rec.body)?;
        let resolved: Vec<PathBuf> = names.iter().map(|n| self.resolve(rec, n)).collect();
        // A symlink's content names the file its new name will lead to.
        let target = symlink.map(|s| match resolved.first().and_then(|l| l.parent()) {
            Some(dir) if !s.starts_with('/') => normalise(&dir.join(s)),
            _ => normalise(Path::new(s)),
        });
        let (path, family) = resolved
            .into_iter()
            .chain(target)
            .find_map(|p| self.family(&p).map(|k| (p, k)))?;
        let body = Body::Persist {
            family: family.to_string(),
            call: call.to_owned(),
            path: path.to_string_lossy().into_owned(),
            allowed: self.allow.contains(&family),
            result,
            errno: errno.clone(),
        };
        let mut out = rec.clone();
        out.denied = body.is_denied();
        out.body = body;
        Some(out)
    }

    /// Where a recorded path leads: absolute, or from the process's
    /// working directory; relative to a directory fd, as written.
    fn resolve(&self, rec: &AuditRecord, n: &Named<'_>) -> PathBuf {
        match n.dirfd {
            Some(_) if !n.path.starts_with('/') => PathBuf::from(n.path),
            _ => self.cwds.resolve(rec.pid, n.path),
        }
    }
}

/// What a record's call would change: (call, result, errno, the names it
/// creates, changes or removes, a symlink's content).
type Writes<'a> = (
    &'a str,
    i64,
    &'a Option<String>,
    Vec<Named<'a>>,
    Option<&'a str>,
);

fn writes(body: &Body) -> Option<Writes<'_>> {
    match body {
        Body::Open {
            call,
            path,
            flags,
            dirfd,
            result,
            errno,
            ..
        } if flags
            .iter()
            .any(|f| matches!(f.as_str(), "O_WRONLY" | "O_RDWR" | "O_CREAT" | "O_TRUNC")) =>
        {
            let named = vec![Named {
                path,
                dirfd: *dirfd,
            }];
            Some((call, *result, errno, named, None))
        }
        Body::Mkdir(p) | Body::Unlink(p) | Body::Rmdir(p) => {
            let named = vec![Named {
                path: &p.path,
                dirfd: p.dirfd,
            }];
            Some((&p.call, p.result, &p.errno, named, None))
        }
        Body::Rename(p) => Some((&p.call, p.result, &p.errno, both(p), None)),
        Body::Link(p) => {
            let new = vec![Named {
                path: &p.new_path,
                dirfd: p.new_dirfd,
            }];
            let symlink = p.call.starts_with("symlink").then_some(p.old_path.as_str());
            Some((&p.call, p.result, &p.errno, new, symlink))
        }
        _ => None,
    }
}

/// A rename's new name, then its old one (moving a hook away is as much
/// a change to it as writing one).
fn both(p: &PathPair) -> Vec<Named<'_>> {
    vec![
        Named {
            path: &p.new_path,
            dirfd: p.new_dirfd,
        },
        Named {
            path: &p.old_path,
            dirfd: p.old_dirfd,
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::PathCall;

    fn rec(pid: u32, body: Body) -> AuditRecord {
        let mut r = AuditRecord::new(body, None, SystemTime::UNIX_EPOCH);
        r.pid = Some(pid);
        r
    }

    fn open(path: &str, flags: &[&str], result: i64) -> Body {
        Body::Open {
            call: "openat".into(),
            path: path.into(),
            path_truncated: false,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            mode: None,
            dirfd: None,
            result,
            errno: (result < 0).then(|| "EROFS".into()),
        }
    }

    fn pair(call: &str, old: &str, new: &str, result: i64) -> PathPair {
        PathPair {
            call: call.into(),
            old_path: old.into(),
            old_path_truncated: false,
            new_path: new.into(),
            new_path_truncated: false,
            flags: vec![],
            old_dirfd: None,
            new_dirfd: None,
            result,
            errno: None,
        }
    }

    fn persist(r: Option<AuditRecord>) -> (String, String, bool, bool) {
        let r = r.expect("a persist record");
        let Body::Persist {
            family,
            path,
            allowed,
            ..
        } = r.body
        else {
            panic!("not persist: {:?}", r.body)
        };
        (family, path, allowed, r.denied)
    }

    #[test]
    fn write_intent_on_persistence_paths_is_recorded_with_its_outcome() {
        let mut w = Watch::new("/p".into(), vec![PersistKind::Direnv]);
        let erofs = -i64::from(libc::EROFS);
        assert_eq!(
            persist(w.observe(&rec(
                1,
                open(".git/hooks/post-commit", &["O_WRONLY", "O_CREAT"], erofs)
            ))),
            (
                "git_hooks".into(),
                "/p/.git/hooks/post-commit".into(),
                false,
                true
            )
        );
        assert_eq!(
            persist(w.observe(&rec(1, open("/p/.envrc", &["O_WRONLY"], 3)))),
            ("direnv".into(), "/p/.envrc".into(), true, false)
        );
        // Reads and other paths: nothing.
        assert!(w
            .observe(&rec(1, open(".git/config", &["O_RDONLY"], 3)))
            .is_none());
        assert!(w
            .observe(&rec(1, open("src/x", &["O_WRONLY"], 3)))
            .is_none());
        // A rename onto the name, and a symlink pointing at a hook.
        let busy = -i64::from(libc::EBUSY);
        let r = w.observe(&rec(
            1,
            Body::Rename(pair("rename", "x", "/p/.mcp.json", busy)),
        ));
        assert_eq!(
            persist(r),
            ("mcp_config".into(), "/p/.mcp.json".into(), false, true)
        );
        let r = w.observe(&rec(
            1,
            Body::Link(pair("symlink", ".git/hooks/pre-push", "/p/lnk", 0)),
        ));
        assert_eq!(
            persist(r),
            (
                "git_hooks".into(),
                "/p/.git/hooks/pre-push".into(),
                false,
                false
            )
        );
    }

    #[test]
    fn relative_paths_follow_the_process_working_directory() {
        let mut w = Watch::new("/p".into(), vec![]);
        let chdir = Body::Chdir(PathCall {
            call: "chdir".into(),
            path: "sub/.git".into(),
            path_truncated: false,
            mode: None,
            dirfd: None,
            fd: None,
            result: 0,
            errno: None,
        });
        assert!(w.observe(&rec(7, chdir)).is_none());
        let r = w.observe(&rec(
            7,
            open("hooks/pre-commit", &["O_CREAT", "O_WRONLY"], 3),
        ));
        assert_eq!(persist(r).1, "/p/sub/.git/hooks/pre-commit");
        // A core.hooksPath directory, once the launcher reported it.
        let custom = || rec(8, open("/p/.githooks/pre-commit", &["O_WRONLY"], 3));
        assert!(w.observe(&custom()).is_none());
        w.add_hooks(vec!["/p/.githooks".into()]);
        assert_eq!(persist(w.observe(&custom())).0, "git_hooks");
        // Another process is still at the launch directory.
        assert!(w
            .observe(&rec(8, open("hooks/pre-commit", &["O_WRONLY"], 3)))
            .is_none());
    }
}
