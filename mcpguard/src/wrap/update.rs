//! `mcpguard update [NAME...]`: move pinned servers to what their runner
//! words ask for now.
//!
//! A pin records the client config's runner words (`npx -y @s/srv`) and
//! the install made for them. Update installs those words again, guarded,
//! the way `wrap` did: words without a version get the registry's newest
//! release, words with one get that version again. The policy's `run`,
//! `package` and `integrity` lines are then rewritten in place; every
//! other byte of the policy stays as the user left it.

use std::path::{Path, PathBuf};

use super::{
    install::{self, Guarded, Host, InstallError},
    runner,
};
use crate::policy::{Policy, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{}: no pinned install to update (no `[command] runner`)", path.display())]
    NotPinned { path: PathBuf },
    #[error("{}: `{words}` is not a runner command mcpguard can install", path.display())]
    NotARunner { path: PathBuf, words: String },
    #[error("{}: {source}", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: InstallError,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an update did to one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: String,
}

/// Reinstalls the pin of the policy at `path` and rewrites its
/// `[command]` lines.
pub fn update(path: &Path, host: &Host<'_>, guard: &dyn Guarded) -> Result<Updated, UpdateError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let policy = Policy::parse(&text, path)?;
    let pin = policy
        .command
        .pin
        .as_ref()
        .ok_or_else(|| UpdateError::NotPinned {
            path: path.to_owned(),
        })?;
    let words = pin.runner.join(" ");
    let runner = pin
        .runner
        .split_first()
        .and_then(|(cmd, args)| runner::parse(cmd, args))
        .filter(|r| r.words == pin.runner.len())
        .ok_or_else(|| UpdateError::NotARunner {
            path: path.to_owned(),
            words,
        })?;
    let dir = install::server_dir(host.home, &policy.name);
    let installed =
        install::install(&runner, &policy.name, &dir, host, guard).map_err(|source| {
            UpdateError::Install {
                path: path.to_owned(),
                source,
            }
        })?;
    let run: Vec<String> = installed
        .run
        .iter()
        .map(|w| super::grants::home_form(Path::new(w), host.home))
        .collect();
    let new_text = set_pin_lines(
        &text,
        &run,
        &installed.package,
        installed.integrity.as_deref(),
    );
    Policy::parse(&new_text, path)?;
    if new_text != text {
        std::fs::write(path, &new_text).map_err(|source| UpdateError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Updated {
        path: path.to_owned(),
        before: pin.package.clone(),
        after: installed.package,
    })
}

/// `text` with the `run`, `package` and `integrity` lines of its
/// `[command]` table replaced (added at the table's end if missing).
fn set_pin_lines(text: &str, run: &[String], package: &str, integrity: Option<&str>) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let run_line = format!(
        "run = [{}]",
        run.iter().map(|w| quote(w)).collect::<Vec<_>>().join(", ")
    );
    let mut wanted: Vec<(&str, Option<String>)> = vec![
        ("run", Some(run_line)),
        ("package", Some(format!("package = {}", quote(package)))),
        (
            "integrity",
            integrity.map(|i| format!("integrity = {}", quote(i))),
        ),
    ];
    let mut out: Vec<String> = Vec::new();
    let mut in_command = false;
    let flush = |out: &mut Vec<String>, wanted: &mut Vec<(&str, Option<String>)>| {
        for (_, line) in wanted.drain(..) {
            out.extend(line);
        }
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if in_command {
                // Keep the table's own lines together, ahead of any blank
                // lines that separate it from the next table.
                let blanks = out.iter().rev().take_while(|l| l.trim().is_empty()).count();
                let tail = out.split_off(out.len() - blanks);
                flush(&mut out, &mut wanted);
                out.extend(tail);
            }
            in_command = trimmed.starts_with("[command]");
        }
        if in_command {
            let key = trimmed.split(['=', ' ']).next().unwrap_or_default();
            if let Some(i) = wanted.iter().position(|(k, _)| *k == key) {
                let (_, replacement) = wanted.remove(i);
                out.extend(replacement);
                continue;
            }
        }
        out.push(line.to_owned());
    }
    if in_command {
        flush(&mut out, &mut wanted);
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_lines_change_in_place() {
        let text = "# mine\nname = \"x\"\n\n[command]\n# why\nrunner = [\"npx\", \"-y\", \"@s/a\"]\nrun = [\"/usr/bin/node\", \"~/old.js\"]\npackage = \"npm:@s/a@1\"\nintegrity = \"sha512-old\"\n";
        let got = set_pin_lines(
            text,
            &["/usr/bin/node".into(), "~/new.js".into()],
            "npm:@s/a@2",
            Some("sha512-new"),
        );
        assert_eq!(
            got,
            "# mine\nname = \"x\"\n\n[command]\n# why\nrunner = [\"npx\", \"-y\", \"@s/a\"]\nrun = [\"/usr/bin/node\", \"~/new.js\"]\npackage = \"npm:@s/a@2\"\nintegrity = \"sha512-new\"\n"
        );
        // A table followed by another, and lines missing before.
        let text = "name = \"x\"\n[command]\nrunner = [\"uvx\", \"t\"]\nrun = [\"/a\"]\n\n[env]\npass = []\n";
        let got = set_pin_lines(text, &["/b".into()], "pypi:t==2", None);
        assert_eq!(
            got,
            "name = \"x\"\n[command]\nrunner = [\"uvx\", \"t\"]\nrun = [\"/b\"]\npackage = \"pypi:t==2\"\n\n[env]\npass = []\n"
        );
        Policy::parse(&got, Path::new("x.toml")).unwrap();
    }
}
