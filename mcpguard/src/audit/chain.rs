//! Tamper evidence for the audit log: every line the writer writes ends in
//! `,"seq":N,"chain":"<hex>"}`.
//!
//! `seq` counts records from the start of the chain (1, 2, ...), across
//! daemon restarts and rotation. `chain` is the lowercase hex SHA-256 of
//! the previous record's chain value (32 raw bytes; zeros before seq 1)
//! followed by this line's bytes without the `,"chain":"..."` field (so
//! ending `,"seq":N}`). The fields are appended to the serialised record as
//! text, last on the line, so a verifier checks a line from its bytes alone
//! without re-serialising JSON.
//!
//! What it proves: a record edited, removed, inserted or moved inside the
//! chain no longer links to its neighbours, and `seq` says which kind of
//! break it is. What it does not: there is no key, so whoever can write the
//! file (root) can recompute the whole chain after an edit, and records cut
//! off the end leave no trace in the file. The chain head is also logged to
//! the daemon's journal when the log is closed; ship that or the log to
//! another machine to anchor it.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    path::Path,
};

use sha2::{Digest, Sha256};

/// The text before the chain value.
const CHAIN_KEY: &[u8] = b",\"chain\":\"";
/// The text before the sequence number.
const SEQ_KEY: &[u8] = b",\"seq\":";
const HASH_HEX: usize = 64;
/// Most bytes the chain fields add to a line (`seq` at 20 digits; they
/// replace the closing `}`).
pub const SEAL_MAX: usize = SEQ_KEY.len() + 20 + CHAIN_KEY.len() + HASH_HEX + 1;
/// How far back from the end of a log [`tail`] looks for its last record.
const TAIL_MAX: u64 = 4 << 20;

/// The chain's state after a record: its `seq` and chain value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub head: [u8; 32],
}

impl Link {
    /// Before the first record of a chain.
    pub const START: Link = Link {
        seq: 0,
        head: [0; 32],
    };

    /// Bytes [`Link::seal`] appends for a record of `json_len` bytes,
    /// newline included.
    pub fn sealed_len(&self, json_len: usize) -> usize {
        // The fields replace the closing `}`, which comes back after them.
        json_len + SEQ_KEY.len() + digits(self.seq + 1) + CHAIN_KEY.len() + HASH_HEX + 1 + 1
    }

    /// Append `json` (one serialised record, `{...}`) to `out` with the
    /// chain fields and a newline, and advance to it.
    pub fn seal(&mut self, json: &[u8], out: &mut Vec<u8>) {
        debug_assert!(json.len() >= 2 && json.ends_with(b"}"));
        let seq = self.seq + 1;
        let start = out.len();
        out.extend_from_slice(&json[..json.len() - 1]);
        out.extend_from_slice(SEQ_KEY);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{seq}");
        let head = digest(&self.head, &out[start..]);
        out.extend_from_slice(CHAIN_KEY);
        out.extend_from_slice(&hex(&head));
        out.extend_from_slice(b"\"}\n");
        *self = Link { seq, head };
    }

    /// The chain value as hex, for logs.
    pub fn head_hex(&self) -> String {
        String::from_utf8_lossy(&hex(&self.head)).into_owned()
    }
}

/// A line's chain fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The line up to `,"chain"`: the hashed bytes less the closing `}`.
    pub body: &'a [u8],
    pub seq: u64,
    pub chain: [u8; 32],
}

impl Sealed<'_> {
    /// Whether the line's chain value is the one it gets after `prev`.
    pub fn follows(&self, prev: &[u8; 32]) -> bool {
        digest(prev, self.body) == self.chain
    }

    pub fn link(&self) -> Link {
        Link {
            seq: self.seq,
            head: self.chain,
        }
    }
}

/// The chain fields of `line` (without its newline), if it ends in them.
pub fn parse(line: &[u8]) -> Option<Sealed<'_>> {
    let rest = line.strip_suffix(b"\"}")?;
    let hex_at = rest.len().checked_sub(HASH_HEX)?;
    let chain = unhex(&rest[hex_at..])?;
    let body = rest[..hex_at].strip_suffix(CHAIN_KEY)?;
    let digits_at = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    let number = &body[digits_at..];
    if !body[..digits_at].ends_with(SEQ_KEY) || number.is_empty() || number.len() > 20 {
        return None;
    }
    let seq = std::str::from_utf8(number).ok()?.parse().ok()?;
    Some(Sealed { body, seq, chain })
}

/// SHA-256 of `prev`, `body` and the `}` that closes it.
fn digest(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.update(b"}");
    h.finalize().into()
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn hex(bytes: &[u8; 32]) -> [u8; HASH_HEX] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; HASH_HEX];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// Lowercase hex only: the writer never writes anything else.
fn unhex(text: &[u8]) -> Option<[u8; 32]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// What the end of an existing log says about the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// The last whole record's link, if it carries one. `None` for an
    /// empty file, for a last record written before the chain existed, or
    /// when no whole record is within reach of the end.
    pub link: Option<Link>,
    /// The file holds at least one whole line.
    pub records: bool,
    /// The file ends in part of a line (a write cut short by a crash).
    pub partial: bool,
}

/// Read the end of the log at `path` (missing: an empty tail).
pub fn tail(path: &Path) -> io::Result<Tail> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Tail {
                link: None,
                records: false,
                partial: false,
            })
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_MAX);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut buf)?;
    let partial = !buf.is_empty() && !buf.ends_with(b"\n");
    // Whole lines only: drop the partial one at the end, and at the start
    // the rest of a line that began before `start`.
    let whole_end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let whole = &buf[..whole_end];
    let first = if start == 0 {
        0
    } else {
        whole
            .iter()
            .position(|&b| b == b'\n')
            .map_or(whole.len(), |i| i + 1)
    };
    let mut link = None;
    for line in whole[first..].split(|&b| b == b'\n').rev() {
        if let Some(sealed) = parse(line) {
            link = Some(sealed.link());
            break;
        }
        // A whole record without the fields predates the chain: a new chain
        // starts after it. Anything else is a fragment, skipped.
        if serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object()) {
            break;
        }
    }
    Ok(Tail {
        link,
        records: whole_end > 0,
        partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(link: &mut Link, json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        link.seal(json.as_bytes(), &mut out);
        out
    }

    #[test]
    fn a_sealed_line_parses_back_and_links_to_the_one_before() {
        let mut link = Link::START;
        let one = sealed(&mut link, r#"{"v":1,"kind":"fork"}"#);
        let two = sealed(&mut link, r#"{"v":1,"kind":"exit"}"#);
        assert!(one.starts_with(br#"{"v":1,"kind":"fork","seq":1,"chain":""#));
        assert_eq!(one.len(), Link::START.sealed_len(21));
        assert!(one.ends_with(b"\"}\n"));
        let a = parse(&one[..one.len() - 1]).unwrap();
        let b = parse(&two[..two.len() - 1]).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(a.follows(&[0; 32]));
        assert!(b.follows(&a.chain));
        assert!(!b.follows(&[0; 32]));
        assert_eq!(b.link(), link);
        // The hashed bytes are the line without the chain field.
        let text = std::str::from_utf8(&one).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v["chain"].as_str().unwrap(),
            Link {
                seq: 1,
                head: a.chain
            }
            .head_hex()
        );
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(br#"{"v":1,"kind":"fork","seq":1}"#);
        assert_eq!(<[u8; 32]>::from(h.finalize()), a.chain);
    }

    #[test]
    fn lines_without_well_formed_fields_do_not_parse() {
        let mut link = Link::START;
        let good = sealed(&mut link, r#"{"v":1}"#);
        let good = std::str::from_utf8(&good[..good.len() - 1]).unwrap();
        assert!(parse(good.as_bytes()).is_some());
        for bad in [
            r#"{"v":1}"#.to_string(),
            good.replace("\"seq\":1", "\"seq\":"),
            good.replace("\"seq\":1", "\"seq\":x1"),
            good.replace("\"seq\"", "\"sec\""),
            good.to_uppercase(),
            good[..good.len() - 1].to_string(),
            good.replace("\"chain\":\"", "\"chain\":\"0"),
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_tail_is_the_last_whole_record_past_fragments() {
        let dir = std::env::temp_dir().join(format!("mcpguard-chain-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        assert_eq!(
            tail(&path).unwrap(),
            Tail {
                link: None,
                records: false,
                partial: false
            }
        );
        let mut link = Link::START;
        let mut text = br#"{"v":1,"old":true}"#.to_vec();
        text.push(b'\n');
        std::fs::write(&path, &text).unwrap();
        let t = tail(&path).unwrap();
        assert_eq!((t.link, t.records, t.partial), (None, true, false));
        text.extend(sealed(&mut link, r#"{"v":1}"#));
        text.extend(sealed(&mut link, r#"{"v":2}"#));
        text.extend_from_slice(b"{\"v\":3,\"cut\n");
        text.extend_from_slice(b"{\"v\":4,\"cut short by a cra");
        std::fs::write(&path, &text).unwrap();
        let t = tail(&path).unwrap();
        assert_eq!((t.link, t.records, t.partial), (Some(link), true, true));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
