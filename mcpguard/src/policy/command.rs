//! `[command]`: which command lines a policy is written for, and the pinned
//! install `mcpguard wrap` made for a runner command.
//!
//! A client config says `npx -y @scope/server ~/code`; `wrap` installs that
//! package once, at an exact version, into a directory mcpguard manages, and
//! records here that the config's `runner` words stand for the installed
//! entry point (`run`). `mcpguard run` then starts the installed copy: the
//! guarded server needs no registry access and no write access to package
//! caches, and what runs changes only when `mcpguard update` says so. The
//! client config keeps its command as written, so `unwrap` is exact.
//!
//! `fits` lets a shipped policy say which launch layouts it was written for;
//! `wrap` picks a shipped policy only for a command it fits.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{check_path, expand_home, Problem};

/// `[command]` as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// The command lines this policy is written for: each entry is the
    /// first words of one (separated by spaces; paths absolute or `~/`).
    pub fits: Vec<String>,
    /// The pinned install, if `wrap` made one.
    pub pin: Option<Pin>,
}

/// A runner command line and the installed program that replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The leading words of the client's command line that name the
    /// runner and the package, e.g. `["npx", "-y", "@scope/server"]`.
    pub runner: Vec<String>,
    /// What runs instead: an absolute (or `~/`) program and its leading
    /// arguments; the words after `runner` follow.
    pub run: Vec<String>,
    /// `npm:NAME@VERSION` or `pypi:NAME==VERSION`, for people and
    /// `mcpguard update`.
    pub package: Option<String>,
    /// The registry's integrity hash of the installed package archive.
    pub integrity: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinMismatch {
    #[error(
        "policy {policy} pins `{pinned}` to an installed copy, but this command runs `{given}`, \
         which would fetch unpinned code: put these words in the policy's [command] runner and \
         run `mcpguard update {policy}`, or remove the policy and run `mcpguard wrap` again"
    )]
    OtherPackage {
        policy: String,
        pinned: String,
        given: String,
    },
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    #[serde(default)]
    fits: Vec<Spanned<String>>,
    #[serde(default)]
    runner: Vec<Spanned<String>>,
    #[serde(default)]
    run: Vec<Spanned<String>>,
    package: Option<Spanned<String>>,
    integrity: Option<Spanned<String>>,
}

/// A problem with one `[command]` value, and where it is.
pub(super) struct Located {
    pub key: &'static str,
    pub start: usize,
    pub value: String,
    pub problem: Problem,
}

impl RawCommand {
    pub(super) fn check(self) -> Result<Command, Located> {
        let at = |key, item: &Spanned<String>, problem| Located {
            key,
            start: item.span().start,
            value: item.get_ref().clone(),
            problem,
        };
        for item in &self.fits {
            check_program(item.get_ref()).map_err(|p| at("command.fits", item, p))?;
        }
        let plain = |list: Vec<Spanned<String>>| -> Vec<String> {
            list.into_iter().map(Spanned::into_inner).collect()
        };
        let fits = plain(self.fits);
        let words_ok = |key, list: &[Spanned<String>]| {
            list.iter().try_for_each(|w| {
                if w.get_ref().contains('\0') {
                    Err(at(key, w, Problem::Nul))
                } else {
                    Ok(())
                }
            })
        };
        words_ok("command.runner", &self.runner)?;
        words_ok("command.run", &self.run)?;
        match (self.runner.first(), self.run.first()) {
            (None, None) => {
                if let Some(item) = self.package.as_ref().or(self.integrity.as_ref()) {
                    return Err(at("command", item, Problem::PinWithoutRun));
                }
                Ok(Command { fits, pin: None })
            }
            (Some(first), None) => Err(at("command.runner", first, Problem::PinWithoutRun)),
            (None, Some(first)) => Err(at("command.run", first, Problem::PinWithoutRun)),
            (Some(_), Some(program)) => {
                let p = program.get_ref();
                if p == "~" || !(p.starts_with('/') || p.starts_with("~/")) {
                    return Err(at("command.run", program, Problem::RelativePath));
                }
                check_path(p).map_err(|e| at("command.run", program, e))?;
                Ok(Command {
                    fits,
                    pin: Some(Pin {
                        runner: plain(self.runner),
                        run: plain(self.run),
                        package: self.package.map(Spanned::into_inner),
                        integrity: self.integrity.map(Spanned::into_inner),
                    }),
                })
            }
        }
    }
}

/// A `fits` entry: words, each a bare word (`npx`, `-y`) or a path.
fn check_program(line: &str) -> Result<(), Problem> {
    if line.contains('\0') {
        return Err(Problem::Nul);
    }
    if line.split_whitespace().next().is_none() {
        return Err(Problem::RelativePath);
    }
    // Bare words (`npx`, `-y`, `@scope/pkg`) stand as they are; anything
    // path-like must be a clean absolute or `~/` path.
    line.split_whitespace()
        .filter(|w| w.starts_with(['/', '~', '.']))
        .try_for_each(check_path)
}

impl Command {
    /// Whether this policy was written for the command line `argv`: a
    /// `fits` entry's words (`~` standing for `home`) start it, or it
    /// starts with the pinned runner words.
    pub fn fits(&self, argv: &[String], home: &Path) -> bool {
        let starts = |words: &mut dyn Iterator<Item = &str>| {
            let mut n = 0;
            for (i, w) in words.enumerate() {
                match argv.get(i) {
                    Some(a) if expand_home(w, home) == expand_home(a, home) => n += 1,
                    _ => return false,
                }
            }
            n > 0
        };
        self.fits.iter().any(|f| starts(&mut f.split_whitespace()))
            || self
                .pin
                .as_ref()
                .is_some_and(|p| starts(&mut p.runner.iter().map(String::as_str)))
    }

    /// The command line to start for `argv`: the pinned program when `argv`
    /// starts with the pinned runner words, `argv` itself otherwise. A
    /// command that runs the pinned runner on another package is refused,
    /// so a changed config never silently runs the old pin or an unpinned
    /// download.
    pub fn resolve(
        &self,
        policy: &str,
        argv: Vec<String>,
        home: &Path,
    ) -> Result<Vec<String>, PinMismatch> {
        let Some(pin) = &self.pin else {
            return Ok(argv);
        };
        if argv.len() >= pin.runner.len() && argv[..pin.runner.len()] == pin.runner[..] {
            let run = pin.run.iter().enumerate().map(|(i, w)| {
                if i == 0 {
                    path_string(&expand_home(w, home))
                } else {
                    expand_tilde_word(w, home)
                }
            });
            return Ok(run
                .chain(argv[pin.runner.len()..].iter().cloned())
                .collect());
        }
        if argv.first() == pin.runner.first() {
            return Err(PinMismatch::OtherPackage {
                policy: policy.to_owned(),
                pinned: pin.runner.join(" "),
                given: argv
                    .iter()
                    .take(pin.runner.len().max(1))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        Ok(argv)
    }
}

fn expand_tilde_word(word: &str, home: &Path) -> String {
    if word == "~" || word.starts_with("~/") {
        path_string(&expand_home(word, home))
    } else {
        word.to_owned()
    }
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyError};

    fn parse(body: &str) -> Result<Policy, PolicyError> {
        Policy::parse(&format!("name = \"t\"\n{body}"), Path::new("t.toml"))
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_pin_replaces_the_runner_words_and_keeps_the_rest() {
        let p = parse(
            "[command]\nrunner = [\"npx\", \"-y\", \"@s/srv\"]\n\
             run = [\"/usr/bin/node\", \"~/.local/share/mcpguard/servers/t/node_modules/@s/srv/index.js\"]\n\
             package = \"npm:@s/srv@1.2.3\"\nintegrity = \"sha512-x\"\n",
        )
        .unwrap();
        let home = Path::new("/home/me");
        let got = p
            .command
            .resolve("t", argv(&["npx", "-y", "@s/srv", "/home/me/code"]), home)
            .unwrap();
        assert_eq!(
            got,
            argv(&[
                "/usr/bin/node",
                "/home/me/.local/share/mcpguard/servers/t/node_modules/@s/srv/index.js",
                "/home/me/code"
            ])
        );
        // Another package through the same runner: refused, never fetched.
        let e = p
            .command
            .resolve("t", argv(&["npx", "-y", "@s/other"]), home)
            .unwrap_err();
        assert!(e.to_string().contains("npx -y @s/other"), "{e}");
        // Another program altogether runs as given.
        let other = argv(&["/opt/srv", "-v"]);
        assert_eq!(p.command.resolve("t", other.clone(), home).unwrap(), other);
        assert!(p.command.fits(&argv(&["npx", "-y", "@s/srv", "x"]), home));
        assert!(!p.command.fits(&argv(&["npx", "-y", "@s/other"]), home));
    }

    #[test]
    fn fits_expands_home() {
        let p = parse(
            "[command]\nfits = [\"~/.venv/bin/srv\", \"/usr/bin/node ~/npm/srv/index.js\"]\n",
        )
        .unwrap();
        let home = Path::new("/home/me");
        assert!(p
            .command
            .fits(&argv(&["/home/me/.venv/bin/srv", "-v"]), home));
        assert!(p
            .command
            .fits(&argv(&["/usr/bin/node", "/home/me/npm/srv/index.js"]), home));
        assert!(!p
            .command
            .fits(&argv(&["/usr/bin/node", "/home/me/npm/other.js"]), home));
        assert!(!p.command.fits(&argv(&["/usr/bin/node"]), home));
        assert_eq!(
            p.command.resolve("t", argv(&["uvx", "x"]), home).unwrap(),
            argv(&["uvx", "x"])
        );
    }

    #[test]
    fn half_a_pin_is_an_error_with_its_place() {
        for body in [
            "[command]\nrunner = [\"npx\"]\n",
            "[command]\nrun = [\"/usr/bin/node\"]\n",
            "[command]\npackage = \"npm:x@1\"\n",
            "[command]\nrunner = [\"npx\"]\nrun = [\"node\"]\n",
            "[command]\nfits = [\"../x\"]\n",
            "[command]\nbogus = 1\n",
        ] {
            let e = parse(body).expect_err(body);
            assert!(e.to_string().contains("t.toml:"), "{body}: {e}");
        }
    }
}
