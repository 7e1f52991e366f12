//! Package runners in server command lines: `npx`, `npm exec`, `pnpm dlx`,
//! `yarn dlx`, `bunx`, `uvx`, `uv tool run`, `uv run --with` and `pipx run`.
//!
//! Each of these fetches a package from a registry and runs one of its
//! programs. [`parse`] finds out which package and program, and how many
//! words of the command line name them, so `wrap` can install the package
//! once, pinned, and replace exactly those words. A command line with an
//! option this parser does not know is not a runner command as far as wrap
//! is concerned: guessing would pin the wrong thing.

use std::path::Path;

/// Where a runner fetches packages from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    Npm,
    Pypi,
}

impl Registry {
    pub fn label(self) -> &'static str {
        match self {
            Registry::Npm => "npm",
            Registry::Pypi => "pypi",
        }
    }
}

/// A runner command line, understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerCommand {
    pub registry: Registry,
    /// The package that provides the program, as the user wrote it (with
    /// any version or extras: `@scope/pkg@1.2`, `mcp-server-git==1.0`).
    pub package: String,
    /// Further packages installed beside it (`uvx --with`, `uv run --with`).
    pub with: Vec<String>,
    /// The program to run, when the command line names it apart from the
    /// package (`npx -p PKG PROGRAM`, `uvx --from PKG PROGRAM`).
    pub program: Option<String>,
    /// How many words of the command line (the command included) the
    /// runner, its options and the package name take; the rest are the
    /// server's own arguments.
    pub words: usize,
}

impl RunnerCommand {
    /// The package name without version or extras.
    pub fn name(&self) -> &str {
        package_name(self.registry, &self.package)
    }

    /// The version the user asked for, if any (`latest` counts as none).
    pub fn version(&self) -> Option<&str> {
        let v = match self.registry {
            Registry::Npm => {
                // `@scope/pkg@1.2`: the version follows the last `@` that is
                // not the scope's.
                let at = self.package[1..].rfind('@').map(|i| i + 1)?;
                &self.package[at + 1..]
            }
            Registry::Pypi => {
                let rest = self
                    .package
                    .split(['[', '@', '=', '<', '>', '~', '!'])
                    .next()?;
                let tail = &self.package[rest.len()..];
                let tail = match tail.find(']') {
                    Some(i) if tail.starts_with('[') => &tail[i + 1..],
                    _ => tail,
                };
                tail.trim_start_matches(['@', '='])
            }
        };
        (!v.is_empty() && v != "latest").then_some(v)
    }

    /// The program the runner starts: the one named, or the package's own
    /// name (without the npm scope), as the runners do by default.
    pub fn program_name(&self) -> &str {
        match &self.program {
            Some(p) => p,
            None => {
                let name = self.name();
                name.rsplit('/').next().unwrap_or(name)
            }
        }
    }
}

/// `pkg@1`, `@scope/pkg@1`, `pkg==1`, `pkg[extra]>=1` without the version
/// and extras.
pub fn package_name(registry: Registry, spec: &str) -> &str {
    match registry {
        Registry::Npm => match spec[1.min(spec.len())..].find('@') {
            Some(i) => &spec[..i + 1],
            None => spec,
        },
        Registry::Pypi => spec
            .split(['[', '@', '=', '<', '>', '~', '!', ';', ' '])
            .next()
            .unwrap_or(spec),
    }
}

/// Options a runner takes before the package, and whether each takes a
/// value.
struct Grammar {
    /// Flags without a value.
    flags: &'static [&'static str],
    /// Options whose value is the next word (or follows `=`).
    valued: &'static [&'static str],
    /// Options whose value names the package; the first positional is
    /// then the program.
    package_opts: &'static [&'static str],
    /// Options whose value is an extra package.
    with_opts: &'static [&'static str],
}

const NPX: Grammar = Grammar {
    flags: &["-y", "--yes", "-q", "--quiet", "--no"],
    valued: &["--registry", "--cache", "--userconfig"],
    package_opts: &["-p", "--package"],
    with_opts: &[],
};

const UVX: Grammar = Grammar {
    flags: &[
        "-q",
        "--quiet",
        "--isolated",
        "--no-cache",
        "-n",
        "--offline",
    ],
    valued: &[
        "--python",
        "-p",
        "--index-url",
        "--index",
        "--default-index",
    ],
    package_opts: &["--from"],
    with_opts: &["--with", "-w"],
};

const PIPX: Grammar = Grammar {
    flags: &["--no-cache", "-q", "--quiet", "-v", "--verbose"],
    valued: &["--python", "--index-url", "-i", "--pip-args"],
    package_opts: &["--spec"],
    with_opts: &[],
};

/// Reads `command args...` as a runner command, if it is one.
pub fn parse(command: &str, args: &[String]) -> Option<RunnerCommand> {
    let base = Path::new(command).file_name()?.to_str()?;
    let word = |i: usize| args.get(i).map(String::as_str);
    // (registry, grammar, words the runner itself takes, the first being
    // the command)
    let (registry, grammar, lead) = match (base, word(0), word(1)) {
        ("npx" | "bunx" | "pnpx", _, _) => (Registry::Npm, &NPX, 1),
        ("npm", Some("exec" | "x"), _) => (Registry::Npm, &NPX, 2),
        ("pnpm" | "yarn", Some("dlx"), _) => (Registry::Npm, &NPX, 2),
        ("uvx", _, _) => (Registry::Pypi, &UVX, 1),
        ("uv", Some("tool"), Some("run")) => (Registry::Pypi, &UVX, 3),
        ("uv", Some("run"), _) => return parse_uv_run(args),
        ("pipx", Some("run"), _) => (Registry::Pypi, &PIPX, 2),
        _ => return None,
    };
    let rest = &args[lead - 1..];
    let (opts, positional) = options(grammar, rest)?;
    let first = rest.get(positional)?;
    let (package, program) = match opts.package {
        Some(pkg) => (pkg, Some(first.clone())),
        None => (first.clone(), None),
    };
    if package.is_empty() || package.starts_with('-') {
        return None;
    }
    Some(RunnerCommand {
        registry,
        package,
        with: opts.with,
        program,
        words: lead + positional + 1,
    })
}

#[derive(Default)]
struct Opts {
    package: Option<String>,
    with: Vec<String>,
}

/// Walks the options before the first positional word; `None` for an
/// option the grammar does not know.
fn options(g: &Grammar, words: &[String]) -> Option<(Opts, usize)> {
    let mut opts = Opts::default();
    let mut i = 0;
    while let Some(w) = words.get(i) {
        if w == "--" {
            return Some((opts, i + 1));
        }
        if !w.starts_with('-') {
            return Some((opts, i));
        }
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (w.as_str(), None),
        };
        if g.flags.contains(&name) && inline.is_none() {
            i += 1;
            continue;
        }
        let known = g.valued.contains(&name)
            || g.package_opts.contains(&name)
            || g.with_opts.contains(&name);
        if !known {
            return None;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                words.get(i)?.clone()
            }
        };
        if g.package_opts.contains(&name) {
            opts.package = Some(value);
        } else if g.with_opts.contains(&name) {
            opts.with.push(value);
        }
        i += 1;
    }
    None
}

/// `uv run --with PKG [--with PKG2] PROGRAM args...`: the program comes
/// from the first `--with` package (a project's own `uv run` is not a
/// runner command).
fn parse_uv_run(args: &[String]) -> Option<RunnerCommand> {
    let rest = &args[1..];
    let (opts, positional) = options(&UVX, rest)?;
    let program = rest.get(positional)?.clone();
    let mut with = opts.with.into_iter();
    let package = opts.package.or_else(|| with.next())?;
    Some(RunnerCommand {
        registry: Registry::Pypi,
        package,
        with: with.collect(),
        program: Some(program),
        words: 2 + positional + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Option<RunnerCommand> {
        let mut words = line.split_whitespace().map(String::from);
        let cmd = words.next().unwrap();
        parse(&cmd, &words.collect::<Vec<_>>())
    }

    #[test]
    fn npm_runners() {
        let r = p("npx -y @modelcontextprotocol/server-filesystem /home/me/code").unwrap();
        assert_eq!(r.registry, Registry::Npm);
        assert_eq!(r.name(), "@modelcontextprotocol/server-filesystem");
        assert_eq!(r.version(), None);
        assert_eq!(r.program_name(), "server-filesystem");
        assert_eq!(r.words, 3);

        let r = p("/usr/bin/npx --yes @s/pkg@1.2.3 --flag").unwrap();
        assert_eq!(
            (r.name(), r.version(), r.words),
            ("@s/pkg", Some("1.2.3"), 3)
        );
        let r = p("npx -y pkg@latest").unwrap();
        assert_eq!((r.name(), r.version()), ("pkg", None));
        let r = p("npm exec -y -- mcp-remote https://x").unwrap();
        assert_eq!((r.name(), r.words), ("mcp-remote", 5));
        let r = p("npx -y -p @s/tools@2 tool-a --x").unwrap();
        assert_eq!(
            (r.name(), r.program_name(), r.words),
            ("@s/tools", "tool-a", 5)
        );
        let r = p("npx --package=@s/tools tool-b").unwrap();
        assert_eq!(
            (r.name(), r.program_name(), r.words),
            ("@s/tools", "tool-b", 3)
        );
        assert_eq!(p("bunx srv a").unwrap().words, 2);
        assert_eq!(p("pnpm dlx srv a").unwrap().words, 3);
        // Unknown options are not guessed at.
        assert_eq!(p("npx --node-options=x srv"), None);
        assert_eq!(p("npx -y"), None);
        assert_eq!(p("npm install srv"), None);
        assert_eq!(p("node srv.js"), None);
    }

    #[test]
    fn python_runners() {
        let r = p("uvx mcp-server-git --repository /home/me/app").unwrap();
        assert_eq!(r.registry, Registry::Pypi);
        assert_eq!(
            (r.name(), r.version(), r.words),
            ("mcp-server-git", None, 2)
        );
        let r = p("uvx mcp-server-fetch@2025.1.1").unwrap();
        assert_eq!(r.version(), Some("2025.1.1"));
        let r = p("uvx --from mcp-server-git==1.0 mcp-server-git -v").unwrap();
        assert_eq!((r.name(), r.version()), ("mcp-server-git", Some("1.0")));
        assert_eq!((r.program_name(), r.words), ("mcp-server-git", 4));
        let r = p("uv tool run --with httpx pkg[cli] a").unwrap();
        assert_eq!(
            (r.name(), r.with.clone(), r.words),
            ("pkg", vec!["httpx".to_owned()], 6)
        );
        let r = p("uv run --with mcp-server-time mcp-server-time --local-timezone UTC").unwrap();
        assert_eq!(
            (r.name(), r.program_name(), r.words),
            ("mcp-server-time", "mcp-server-time", 5)
        );
        assert_eq!(p("uv run server.py"), None);
        let r = p("pipx run --spec mcp-server-time==1 mcp-server-time").unwrap();
        assert_eq!(
            (r.name(), r.version(), r.words),
            ("mcp-server-time", Some("1"), 5)
        );
        let r = p("pipx run mcp-server-time").unwrap();
        assert_eq!(r.words, 3);
    }
}
