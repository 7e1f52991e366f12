//! `mcpguard doctor`'s verdict per class (held, recorded, or what is
//! missing and why) and how it is printed: a table, or JSON with `--json`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use super::{
    classes::{Class, CLASSES},
    probe::{Seen, Targets},
};
use crate::{
    daemon::status::{LayerStatus, StatusReport},
    term,
};

/// One class's result.
#[derive(Debug, Serialize)]
pub struct ClassVerdict {
    pub class: &'static str,
    pub attempt: &'static str,
    pub expected: &'static [&'static str],
    /// What the probe saw (absent when it did not report this class).
    pub seen: Option<String>,
    pub held: bool,
    pub recorded: bool,
    /// The kinds of the records that matched.
    pub records: Vec<String>,
    /// Why the class is not held and recorded; absent when it is.
    pub missing: Option<String>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// The probe's launch id (absent when the launch failed).
    pub launch: Option<String>,
    pub classes: Vec<ClassVerdict>,
    /// The daemon's status when doctor judged (its layers give reasons).
    #[serde(skip)]
    pub status: StatusReport,
}

impl Verdict {
    pub fn judge(
        status: StatusReport,
        launch: &str,
        targets: &Targets,
        seen: &[Seen],
        records: &[Value],
    ) -> Verdict {
        let classes = CLASSES
            .iter()
            .map(|class| {
                let saw = seen
                    .iter()
                    .find(|s| s.class == class.name)
                    .map(|s| s.seen.clone());
                let held = saw.as_deref().is_some_and(|s| class.expect.contains(&s));
                let mut kinds: Vec<String> = records
                    .iter()
                    .filter(|r| (class.matches)(r, targets))
                    .filter_map(|r| r["kind"].as_str().map(str::to_owned))
                    .collect();
                kinds.sort_unstable();
                kinds.dedup();
                let recorded = !kinds.is_empty();
                let missing = reason(class, &status, saw.as_deref(), held, recorded, launch);
                ClassVerdict {
                    class: class.name,
                    attempt: class.attempt,
                    expected: class.expect,
                    seen: saw,
                    held,
                    recorded,
                    records: kinds,
                    missing,
                }
            })
            .collect();
        Verdict {
            launch: Some(launch.into()),
            classes,
            status,
        }
    }

    /// Every class missing: the probe could not be launched.
    pub fn launch_failed(status: StatusReport, why: &str) -> Verdict {
        let classes = CLASSES
            .iter()
            .map(|class| ClassVerdict {
                class: class.name,
                attempt: class.attempt,
                expected: class.expect,
                seen: None,
                held: false,
                recorded: false,
                records: Vec::new(),
                missing: Some(format!("the probe could not be launched: {why}")),
            })
            .collect();
        Verdict {
            launch: None,
            classes,
            status,
        }
    }

    pub fn all_ok(&self) -> bool {
        self.classes.iter().all(|c| c.missing.is_none())
    }
}

/// A layer of the daemon's status, by name.
fn layer<'a>(status: &'a StatusReport, name: &str) -> Option<&'a LayerStatus> {
    status.layers.iter().find(|l| l.layer == name)
}

/// Why a class is not held and recorded, naming the layers the daemon
/// reports for it.
fn reason(
    class: &Class,
    status: &StatusReport,
    seen: Option<&str>,
    held: bool,
    recorded: bool,
    launch: &str,
) -> Option<String> {
    let layers = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|name| match layer(status, name) {
                Some(l) if l.active && l.detail.is_empty() => format!("{name} active"),
                Some(l) if l.active => format!("{name} active ({})", l.detail),
                Some(l) => format!("{name} MISSING: {}", l.detail),
                None => format!("{name} not reported by this daemon"),
            })
            .collect()
    };
    let mut why = Vec::new();
    if !held {
        let saw = seen.map_or_else(
            || "the probe did not report this attempt".to_string(),
            |s| format!("the attempt gave {s}, not {}", class.expect.join(" or ")),
        );
        let by = layers(class.held_by);
        why.push(if by.is_empty() {
            saw
        } else {
            format!("{saw} ({})", by.join("; "))
        });
    }
    if !recorded {
        let mut not = format!("no record of it for launch {launch}");
        let by = layers(class.recorded_by);
        if !by.is_empty() {
            not.push_str(&format!(" ({})", by.join("; ")));
        }
        if let Some(error) = status.audit_log.as_ref().and_then(|a| a.error.as_ref()) {
            not.push_str(&format!("; the audit log is failing: {error}"));
        }
        why.push(not);
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// A class's table cells: name, state, held, recorded.
fn row(c: &ClassVerdict) -> [String; 4] {
    let held = match (&c.seen, c.held) {
        (Some(seen), true) => format!("held ({seen})"),
        (Some(seen), false) => format!("NOT HELD ({})", term::escape(seen)),
        (None, _) => "NOT HELD (no result)".into(),
    };
    let recorded = if c.recorded {
        format!("recorded ({})", c.records.join(", "))
    } else {
        "NOT RECORDED".into()
    };
    let state = if c.missing.is_some() { "MISSING" } else { "ok" };
    [c.class.into(), state.into(), held, recorded]
}

pub fn write(verdict: &Verdict, json: bool) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if json {
        let mut value = serde_json::to_value(verdict).map_err(io::Error::from)?;
        value["ok"] = verdict.all_ok().into();
        serde_json::to_writer_pretty(&mut out, &value).map_err(io::Error::from)?;
        return writeln!(out);
    }
    write_human(verdict, &mut out)
}

fn write_human(verdict: &Verdict, out: &mut impl Write) -> io::Result<()> {
    let s = &verdict.status;
    match &verdict.launch {
        Some(launch) => writeln!(
            out,
            "mcpguard doctor: daemon {} (pid {}), probe launch {}",
            s.version,
            s.pid,
            term::escape(launch)
        )?,
        None => writeln!(out, "mcpguard doctor: daemon {} (pid {})", s.version, s.pid)?,
    }
    let rows: Vec<[String; 4]> = verdict.classes.iter().map(row).collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(2), width(3));
    for (c, [class, state, held, recorded]) in verdict.classes.iter().zip(&rows) {
        writeln!(
            out,
            "  {class:<w0$}  {state:<7}  {held:<w1$}  {recorded:<w2$}  {}",
            c.attempt
        )?;
        if let Some(why) = &c.missing {
            writeln!(out, "  {:<w0$}  {}", "", term::escape(why))?;
        }
    }
    let missing = verdict
        .classes
        .iter()
        .filter(|c| c.missing.is_some())
        .count();
    match missing {
        0 => writeln!(
            out,
            "all {} classes held and recorded",
            verdict.classes.len()
        ),
        n => writeln!(
            out,
            "{n} of {} classes missing on this machine",
            verdict.classes.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn targets() -> Targets {
        Targets {
            file: "/home/u/.mcpguard-doctor-x/not-in-the-policy".into(),
            connect: ([127, 0, 0, 1], 9).into(),
            name: "denied-1.mcpguard-doctor.invalid".into(),
            exec: "/usr/bin/true".into(),
            pid: 4242,
            abstract_name: "mcpguard-doctor-4242-1".into(),
        }
    }

    fn status(attrs_active: bool) -> StatusReport {
        serde_json::from_value(json!({
            "version": "0", "pid": 1, "started": "t", "uptime_s": 1, "only_uid": 1000,
            "servers": [],
            "layers": [
                {"layer": "landlock", "active": true, "detail": "ABI 7"},
                {"layer": "audit_attrs", "active": attrs_active,
                 "detail": if attrs_active { "" } else { "audit_attrs: tracepoint refused" }},
            ],
        }))
        .unwrap()
    }

    /// One record per class, as the daemon writes them for the probe.
    fn records(t: &Targets) -> Vec<Value> {
        let file = t.file.to_str().unwrap();
        vec![
            json!({"kind": "open", "denied": true, "path": file, "errno": "EACCES"}),
            json!({"kind": "connect", "denied": true, "verdict": "deny", "op": "connect4",
                   "addr": "127.0.0.1", "port": 9}),
            json!({"kind": "dns", "denied": true, "verdict": "deny", "qname": t.name}),
            json!({"kind": "landlock", "denied": true, "path": "/usr/bin/true",
                   "blockers": ["fs.execute"]}),
            json!({"kind": "attr", "denied": true, "call": "fchmodat", "path": file}),
            json!({"kind": "landlock", "denied": true, "blockers": ["scope.signal"],
                   "opid": 4242}),
            json!({"kind": "unix_connect", "denied": true, "abstract_addr": true,
                   "path": t.abstract_name}),
        ]
    }

    fn seen(chmod: &str) -> Vec<Seen> {
        CLASSES
            .iter()
            .map(|c| Seen {
                class: c.name.into(),
                seen: if c.name == "chmod" {
                    chmod
                } else {
                    c.expect[0]
                }
                .into(),
            })
            .collect()
    }

    #[test]
    fn every_class_held_and_recorded_is_ok() {
        let t = targets();
        let v = Verdict::judge(
            status(true),
            "mcpguard-doctor-1",
            &t,
            &seen("EROFS"),
            &records(&t),
        );
        assert!(v.all_ok(), "{v:#?}");
        let exec = v.classes.iter().find(|c| c.class == "exec").unwrap();
        assert_eq!(exec.records, ["landlock"]);
    }

    #[test]
    fn a_class_not_held_nor_recorded_names_what_it_saw_and_the_missing_layer() {
        let t = targets();
        let mut recs = records(&t);
        recs.retain(|r| r["kind"] != "attr");
        let v = Verdict::judge(status(false), "mcpguard-doctor-1", &t, &seen("ok"), &recs);
        assert!(!v.all_ok());
        let chmod = v.classes.iter().find(|c| c.class == "chmod").unwrap();
        assert!(!chmod.held && !chmod.recorded, "{chmod:#?}");
        let why = chmod.missing.as_deref().unwrap();
        assert!(why.contains("the attempt gave ok, not EROFS"), "{why}");
        assert!(
            why.contains("no record of it for launch mcpguard-doctor-1 (audit_attrs MISSING: audit_attrs: tracepoint refused)"),
            "{why}"
        );
        let others = v.classes.iter().filter(|c| c.class != "chmod");
        assert!(others.clone().all(|c| c.missing.is_none()), "{v:#?}");
    }

    #[test]
    fn the_table_gives_each_class_a_line_and_each_missing_one_its_reason() {
        let t = targets();
        let mut recs = records(&t);
        recs.retain(|r| r["kind"] != "attr");
        let v = Verdict::judge(
            status(false),
            "mcpguard-doctor-1",
            &t,
            &seen("EROFS"),
            &recs,
        );
        let mut out = Vec::new();
        write_human(&v, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1 + CLASSES.len() + 1 + 1, "{text}");
        assert!(
            text.contains("  chmod          MISSING  held (EROFS)     NOT RECORDED"),
            "{text}"
        );
        assert!(
            text.contains("(audit_attrs MISSING: audit_attrs: tracepoint refused)"),
            "{text}"
        );
        assert!(
            text.ends_with("1 of 7 classes missing on this machine\n"),
            "{text}"
        );
    }

    #[test]
    fn a_record_of_another_file_or_port_is_not_the_class_record() {
        let t = targets();
        let other = vec![
            json!({"kind": "open", "denied": true, "path": "/etc/shadow"}),
            json!({"kind": "connect", "verdict": "deny", "addr": "127.0.0.1", "port": 10}),
        ];
        let v = Verdict::judge(status(true), "l", &t, &seen("EROFS"), &other);
        assert!(v.classes.iter().all(|c| !c.recorded), "{v:#?}");
    }
}
