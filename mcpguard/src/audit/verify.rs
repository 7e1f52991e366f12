//! `mcpguard audit verify`: walk the audit log's hash chain ([`super::chain`])
//! through the rotated files, oldest first, then the log, and say whether
//! it is intact or where it first breaks and how.
//!
//! Not breaks, but said: records before the chain began (written by a
//! daemon without it), lines that are not whole records (a write a crash
//! or a full disk cut short; the writer writes the record again whole, so
//! the chain goes on past them), and a chain whose first record available
//! is not its first (older rotated files were removed, as rotation does).

use std::{
    fmt,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use super::{
    chain::{self, Link, Sealed},
    writer::rotated_path,
};

/// Most rotated files looked for (`<log>.1` ...), as `mcpguard audit`.
const MAX_ROTATED: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit log {path} does not exist; pass --log PATH to check a different file")]
    NotFound { path: PathBuf },
    #[error(
        "cannot read audit log {path}: permission denied (the log belongs to root; \
         run `sudo mcpguard audit verify`)"
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot read audit log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// Where the chain begins in the files there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// No chained record at all.
    None,
    /// At its first record (seq 1).
    Genesis,
    /// At seq `seq`: the records before it were rotated away.
    Rotated { file: PathBuf, line: u64, seq: u64 },
}

/// How the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakKind {
    /// The record's bytes (or its chain fields) are not the ones sealed.
    Edited { seq: u64 },
    /// Records `from..=to` are missing here.
    Deleted { from: u64, to: u64 },
    /// The file before this one is missing, with records `from..=to`.
    MissingFile {
        missing: PathBuf,
        from: u64,
        to: u64,
    },
    /// Seq `seq` stands where `expected` should; `expected` comes later,
    /// or came before.
    Reordered { seq: u64, expected: u64 },
    /// A record without chain fields after the chain began.
    Unchained,
    /// A new chain (seq 1) starts after chained records.
    Restarted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub kind: BreakKind,
}

/// What a walk of the files found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Chained records checked (up to the break, if any).
    pub records: u64,
    /// Whole records before the chain began.
    pub unchained: u64,
    /// Lines that are not whole records: (file, line).
    pub fragments: Vec<(PathBuf, u64)>,
    pub start: Start,
    /// The last record's link.
    pub end: Option<Link>,
    pub broken: Option<Break>,
}

/// Check the chain through `log`'s rotated files and `log`.
pub fn verify(log: &Path) -> Result<Report, VerifyError> {
    let files = files(log)?;
    let mut walk = Walk {
        report: Report {
            files: files.iter().map(|f| f.path.clone()).collect(),
            records: 0,
            unchained: 0,
            fragments: Vec::new(),
            start: Start::None,
            end: None,
            broken: None,
        },
        files: &files,
    };
    for (index, file) in files.iter().enumerate() {
        let done = each_line(&file.path, |line_no, line| {
            walk.line(index, line_no, line);
            walk.report.broken.is_none()
        })?;
        if !done {
            break;
        }
    }
    Ok(walk.report)
}

/// A file to read, and the rotated file missing just before it.
struct LogFile {
    path: PathBuf,
    after_gap: Option<PathBuf>,
}

/// `<log>.N` ... `<log>.1` that exist, then `log`; a number missing below
/// the highest is a gap.
fn files(log: &Path) -> Result<Vec<LogFile>, VerifyError> {
    let open = |path: &Path| match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(read_error(path, source)),
    };
    if !open(log)? {
        return Err(VerifyError::NotFound {
            path: log.to_path_buf(),
        });
    }
    let present: Vec<bool> = (1..=MAX_ROTATED)
        .map(|n| open(&rotated_path(log, n)))
        .collect::<Result<_, _>>()?;
    let highest = present.iter().rposition(|&p| p).map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut gap = None;
    for n in (1..=highest as u32).rev() {
        let path = rotated_path(log, n);
        if present[n as usize - 1] {
            out.push(LogFile {
                path,
                after_gap: gap.take(),
            });
        } else {
            gap = Some(path);
        }
    }
    out.push(LogFile {
        path: log.to_path_buf(),
        after_gap: gap,
    });
    Ok(out)
}

/// Call `f` with each line (without its newline) of the file, numbered
/// from 1, while it returns true; returns whether it got to the end.
fn each_line(path: &Path, mut f: impl FnMut(u64, &[u8]) -> bool) -> Result<bool, VerifyError> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| read_error(path, e))?;
        if n == 0 {
            return Ok(true);
        }
        line_no += 1;
        if line.ends_with(b"\n") {
            line.pop();
        }
        if !f(line_no, &line) {
            return Ok(false);
        }
    }
}

fn read_error(path: &Path, source: io::Error) -> VerifyError {
    let path = path.to_path_buf();
    match source.kind() {
        io::ErrorKind::PermissionDenied => VerifyError::PermissionDenied { path },
        io::ErrorKind::NotFound => VerifyError::NotFound { path },
        _ => VerifyError::Read { path, source },
    }
}

struct Walk<'a> {
    report: Report,
    files: &'a [LogFile],
}

impl Walk<'_> {
    fn line(&mut self, file: usize, line_no: u64, line: &[u8]) {
        let Some(sealed) = chain::parse(line) else {
            let record =
                serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object());
            match (record, self.report.end) {
                (true, None) => self.report.unchained += 1,
                (true, Some(_)) => self.broke(file, line_no, BreakKind::Unchained),
                (false, _) => self
                    .report
                    .fragments
                    .push((self.files[file].path.clone(), line_no)),
            }
            return;
        };
        let Some(prev) = self.report.end else {
            return self.first(file, line_no, &sealed);
        };
        let expected = prev.seq + 1;
        let kind = match sealed.seq {
            s if s == expected && sealed.follows(&prev.head) => None,
            s if s == expected => Some(BreakKind::Edited { seq: s }),
            1 if sealed.follows(&Link::START.head) => Some(BreakKind::Restarted),
            s if s > expected => Some(self.jump(file, line_no, s, expected)),
            s => Some(BreakKind::Reordered { seq: s, expected }),
        };
        match kind {
            None => self.accept(&sealed),
            Some(kind) => self.broke(file, line_no, kind),
        }
    }

    /// The first chained record: seq 1 must be sealed from the start;
    /// later ones are taken as the anchor, their predecessors gone.
    fn first(&mut self, file: usize, line_no: u64, sealed: &Sealed<'_>) {
        if sealed.seq == 1 {
            if !sealed.follows(&Link::START.head) {
                return self.broke(file, line_no, BreakKind::Edited { seq: 1 });
            }
            self.report.start = Start::Genesis;
        } else {
            self.report.start = Start::Rotated {
                file: self.files[file].path.clone(),
                line: line_no,
                seq: sealed.seq,
            };
        }
        self.accept(sealed);
    }

    fn accept(&mut self, sealed: &Sealed<'_>) {
        self.report.records += 1;
        self.report.end = Some(sealed.link());
    }

    fn broke(&mut self, file: usize, line: u64, kind: BreakKind) {
        self.report.broken = Some(Break {
            file: self.files[file].path.clone(),
            line,
            kind,
        });
    }

    /// Seq `seq` where `expected` should be: a missing file before this
    /// one, records deleted, records moved (`expected` is further on), or
    /// this record's seq edited (the next record is `expected + 1`).
    fn jump(&self, file: usize, line_no: u64, seq: u64, expected: u64) -> BreakKind {
        let deleted = BreakKind::Deleted {
            from: expected,
            to: seq - 1,
        };
        let mut next_seq = None;
        let mut later = false;
        for (index, f) in self.files.iter().enumerate().skip(file) {
            let skip = if index == file { line_no } else { 0 };
            // A file unreadable now was read a moment ago: say what is known.
            let Ok(_) = each_line(&f.path, |n, line| {
                let Some(s) = (n > skip).then(|| chain::parse(line)).flatten() else {
                    return true;
                };
                next_seq.get_or_insert(s.seq);
                later = s.seq == expected;
                !later
            }) else {
                return deleted;
            };
            if later {
                break;
            }
        }
        if later {
            BreakKind::Reordered { seq, expected }
        } else if next_seq == Some(expected + 1) {
            BreakKind::Edited { seq: expected }
        } else if let (1, Some(missing)) = (line_no, &self.files[file].after_gap) {
            BreakKind::MissingFile {
                missing: missing.clone(),
                from: expected,
                to: seq - 1,
            }
        } else {
            deleted
        }
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakKind::Edited { seq } => write!(
                f,
                "record seq {seq} was edited (its bytes are not the ones its chain value seals)"
            ),
            BreakKind::Deleted { from, to } if from == to => {
                write!(f, "record seq {from} before this line was deleted")
            }
            BreakKind::Deleted { from, to } => write!(
                f,
                "records seq {from} to {to} ({} records) before this line were deleted",
                to - from + 1
            ),
            BreakKind::MissingFile { missing, from, to } => write!(
                f,
                "{} is missing: records seq {from} to {to} are not there",
                missing.display()
            ),
            BreakKind::Reordered { seq, expected } => write!(
                f,
                "records reordered: seq {seq} stands where seq {expected} should"
            ),
            BreakKind::Unchained => write!(
                f,
                "a record without chain fields inside the chain (inserted, or its fields edited)"
            ),
            BreakKind::Restarted => write!(
                f,
                "a new chain starts here (seq 1): the records before it no longer link"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
