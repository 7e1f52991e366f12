//! `report.md` (summary table, targets met or missed, notes per section)
//! and `report.json` (the same plus every sample) under `<target>/bench/`.

use std::{fmt::Write as _, fs, path::Path, time::Duration};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{Ctx, Row, Section, Stats};
use crate::sh;

/// A number with as many digits as it deserves.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let a = x.abs();
    if a >= 10_000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn stats(s: &Option<Stats>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.runs == 1 => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

fn row(r: &Row) -> String {
    let ratio = r
        .ratio()
        .map(|x| format!("{x:.2}x"))
        .unwrap_or_else(|| "—".into());
    let added = r
        .added()
        .map(|x| format!("{}{}", if x >= 0.0 { "+" } else { "" }, num(x)))
        .unwrap_or_else(|| "—".into());
    format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        r.what,
        r.unit,
        stats(&r.bare),
        stats(&r.value),
        ratio,
        added
    )
}

fn git_commit() -> String {
    let root = crate::root();
    let head = sh::output(sh::cmd("git", &["rev-parse", "--short", "HEAD"]).current_dir(&root))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown (not a git checkout)".into());
    let dirty = sh::output(sh::cmd("git", &["status", "--porcelain"]).current_dir(&root))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

/// Write both files; returns the Markdown.
pub fn write(
    out: &Path,
    machine: &Value,
    ctx: &Ctx,
    sections: &[Section],
    took: Duration,
    only: &[String],
) -> Result<String> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let date = sh::output(&mut sh::cmd("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let commit = git_commit();
    let mode = if ctx.quick { "quick" } else { "full" };

    let mut md = String::new();
    writeln!(md, "# mcpguard bench\n")?;
    if ctx.quick {
        writeln!(
            md,
            "**Quick run** (`cargo xtask bench --quick`): each item ran briefly to check the harness. The numbers are not meaningful; run `cargo xtask bench` for them.\n"
        )?;
    }
    writeln!(
        md,
        "- Machine: {}, {} cores, {} GiB; kernel {}; {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["os"].as_str().unwrap_or("?"),
    )?;
    writeln!(
        md,
        "- Run: {mode}, {date}, {:.0} s; mcpguard {} build at {commit}",
        took.as_secs_f64(),
        ctx.profile
    )?;
    if !only.is_empty() {
        writeln!(
            md,
            "- Sections: {} only (`--only`); the other sections did not run",
            only.join(", ")
        )?;
    }
    let others = machine["other_mcpguard_daemons"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    writeln!(
        md,
        "- Load average at start: {}; other mcpguard daemons seen during the run: {}",
        machine["loadavg_at_start"].as_str().unwrap_or("?"),
        if others == 0 {
            "none".to_string()
        } else {
            format!(
                "**{others}** (their syscall tracepoints slow every task, bare runs included, and their servers compete for the cores: figures are noisier than on a quiet machine)"
            )
        }
    )?;
    writeln!(
        md,
        "- Each figure: median of repeated runs (min–max); ratio and added are measured vs bare. Bare runs have no daemon loaded; servers run as the unprivileged user `{}`.\n",
        crate::setup::TEST_USER
    )?;

    writeln!(md, "## Summary\n")?;
    writeln!(
        md,
        "| measure | unit | bare | measured | ratio | added |\n|---|---|---|---|---|---|"
    )?;
    for s in sections {
        for r in &s.rows {
            md.push_str(&row(r));
        }
    }

    writeln!(md, "\n## Targets\n")?;
    writeln!(
        md,
        "| target | measured | result | why |\n|---|---|---|---|"
    )?;
    for s in sections {
        for t in &s.targets {
            let result = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            writeln!(md, "| {} | {} | {result} | {} |", t.what, t.measured, t.why)?;
        }
    }

    for s in sections {
        writeln!(md, "\n## {}\n", s.title)?;
        for n in &s.notes {
            writeln!(md, "- {n}")?;
        }
    }
    writeln!(md, "\nEvery sample and trial is in `report.json`.")?;

    let report = json!({
        "mode": mode,
        "date": date,
        "commit": commit,
        "profile": ctx.profile,
        "elapsed_s": took.as_secs_f64(),
        "only": only,
        "machine": machine,
        "sections": sections.iter().map(|s| json!({
            "key": s.key,
            "title": s.title,
            "targets": s.targets.iter().map(|t| json!({
                "what": t.what, "measured": t.measured, "met": t.met, "why": t.why,
            })).collect::<Vec<_>>(),
            "notes": s.notes,
            "details": s.details,
        })).collect::<Vec<_>>(),
    });
    fs::write(out.join("report.md"), &md)?;
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(md)
}
