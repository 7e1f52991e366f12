//! The chain as the writer writes it, then each kind of tampering, found
//! at its line.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::audit::{
    writer::{AuditWriter, Rotation, DEFAULT_BACKLOG_BYTES},
    AuditRecord, Body,
};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcpguard-audit-verify-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join("audit.jsonl")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(n: u32) -> AuditRecord {
    AuditRecord::new(
        Body::Fork { child_pid: n },
        None,
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(n)),
    )
}

/// Records `from..=to` written through a writer opened on `log` (as a
/// daemon run: the writer reads where the chain stands).
fn write(log: &Path, from: u32, to: u32, rotation: Rotation) {
    let mut w = AuditWriter::open_rotating(log, DEFAULT_BACKLOG_BYTES, rotation).unwrap();
    for n in from..=to {
        w.write(&record(n));
        w.flush();
    }
}

/// Rotation after `lines` records a file.
fn every(lines: u64, keep: u32) -> Rotation {
    let one = chain::Link::START.sealed_len(record(1).to_json_line().len());
    Rotation {
        max_bytes: lines * one as u64,
        keep,
    }
}

fn no_rotation() -> Rotation {
    Rotation {
        max_bytes: 0,
        keep: 0,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn broken_at(log: &Path) -> (u64, BreakKind) {
    let r = verify(log).unwrap();
    let b = r
        .broken
        .clone()
        .unwrap_or_else(|| panic!("not broken: {r:?}"));
    (b.line, b.kind)
}

#[test]
fn a_log_written_over_restarts_is_intact_from_genesis() {
    let s = Scratch::new("intact");
    write(&s.log(), 1, 3, no_rotation());
    write(&s.log(), 4, 5, no_rotation());
    let r = verify(&s.log()).unwrap();
    assert_eq!(r.broken, None);
    assert_eq!((r.records, r.start.clone()), (5, Start::Genesis));
    assert_eq!(r.end.unwrap().seq, 5);
    let seqs: Vec<u64> = lines(&s.log())
        .iter()
        .map(|l| chain::parse(l.as_bytes()).unwrap().seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5],
        "a restart goes on where the log ends"
    );
}

#[test]
fn the_chain_crosses_rotation_and_a_rotated_away_start_is_information() {
    let s = Scratch::new("rotate");
    let rotation = every(3, 2);
    // .1 holds 1-3, the log 4-5.
    write(&s.log(), 1, 5, rotation);
    // A restart with an empty log (just rotated) goes on from `.1`.
    std::fs::rename(s.log(), rotated_path(&s.log(), 1)).unwrap();
    std::fs::remove_file(rotated_path(&s.log(), 2)).ok();
    std::fs::write(s.log(), "").unwrap();
    write(&s.log(), 6, 10, rotation);
    let r = verify(&s.log()).unwrap();
    assert_eq!(r.broken, None, "{r:?}");
    assert_eq!(r.files.len(), 3);
    let Start::Rotated { file, line, seq } = r.start else {
        panic!("{r:?}")
    };
    assert_eq!((file, line), (rotated_path(&s.log(), 2), 1));
    assert!(seq > 1, "records 1.. went with the oldest file");
    assert_eq!(r.end.unwrap().seq, 10);
}

#[test]
fn a_missing_rotated_file_in_the_middle_is_named() {
    let s = Scratch::new("gap");
    // .3 holds 1-3, .2 4-6, .1 7-9, the log 10.
    write(&s.log(), 1, 10, every(3, 5));
    let middle = rotated_path(&s.log(), 2);
    std::fs::remove_file(&middle).unwrap();
    let (line, kind) = broken_at(&s.log());
    assert_eq!(line, 1);
    assert_eq!(
        kind,
        BreakKind::MissingFile {
            missing: middle,
            from: 4,
            to: 6
        }
    );
}

#[test]
fn each_kind_of_tampering_is_found_at_its_line() {
    let s = Scratch::new("tamper");
    write(&s.log(), 1, 6, no_rotation());
    let good = lines(&s.log());

    let mut edited = good.clone();
    edited[2] = edited[2].replace("\"child_pid\":3", "\"child_pid\":4");
    put(&s.log(), &edited);
    assert_eq!(broken_at(&s.log()), (3, BreakKind::Edited { seq: 3 }));

    let mut first = good.clone();
    first[0] = first[0].replace("fork", "exit");
    put(&s.log(), &first);
    assert_eq!(broken_at(&s.log()), (1, BreakKind::Edited { seq: 1 }));

    let mut deleted = good.clone();
    deleted.remove(3);
    put(&s.log(), &deleted);
    assert_eq!(
        broken_at(&s.log()),
        (4, BreakKind::Deleted { from: 4, to: 4 })
    );

    let mut swapped = good.clone();
    swapped.swap(1, 2);
    put(&s.log(), &swapped);
    assert_eq!(
        broken_at(&s.log()),
        (
            2,
            BreakKind::Reordered {
                seq: 3,
                expected: 2
            }
        )
    );

    let mut renumbered = good.clone();
    renumbered[4] = renumbered[4].replace("\"seq\":5", "\"seq\":9");
    put(&s.log(), &renumbered);
    assert_eq!(broken_at(&s.log()), (5, BreakKind::Edited { seq: 5 }));

    let mut inserted = good.clone();
    inserted.insert(2, record(99).to_json_line());
    put(&s.log(), &inserted);
    assert_eq!(broken_at(&s.log()), (3, BreakKind::Unchained));

    let mut restarted = good.clone();
    restarted.truncate(2);
    put(&s.log(), &restarted);
    write(&s.log(), 3, 3, no_rotation());
    let mut again = lines(&s.log());
    std::fs::remove_file(s.log()).unwrap();
    write(&s.log(), 7, 7, no_rotation());
    again.extend(lines(&s.log()));
    put(&s.log(), &again);
    assert_eq!(broken_at(&s.log()), (4, BreakKind::Restarted));
}

#[test]
fn fragments_and_records_before_the_chain_are_not_breaks() {
    let s = Scratch::new("fragments");
    let legacy = record(1).to_json_line();
    std::fs::write(s.log(), format!("{legacy}\n{legacy}\n")).unwrap();
    write(&s.log(), 2, 3, no_rotation());
    // A crash cut the last line short: the next daemon run goes on.
    let mut text = std::fs::read(s.log()).unwrap();
    text.extend_from_slice(br#"{"v":1,"ts":"2023-"#);
    std::fs::write(s.log(), &text).unwrap();
    write(&s.log(), 4, 4, no_rotation());
    let r = verify(&s.log()).unwrap();
    assert_eq!(r.broken, None, "{r:?}");
    assert_eq!((r.unchained, r.records), (2, 3));
    assert_eq!(r.start, Start::Genesis);
    assert_eq!(r.fragments, [(s.log(), 5)]);
    // The record after the fragment stands on its own line.
    let all = lines(&s.log());
    assert!(all[5].contains("\"child_pid\":4"), "{all:?}");
}

#[test]
fn a_missing_or_unreadable_log_is_an_error_not_a_verdict() {
    let s = Scratch::new("missing");
    assert!(matches!(
        verify(&s.log()),
        Err(VerifyError::NotFound { .. })
    ));
}
