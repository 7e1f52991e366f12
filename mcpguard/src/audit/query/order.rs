//! Time order for `mcpguard audit`: the log's sources (kernel ring buffer,
//! MCP tap, resolver, daemon) are written slightly out of order, and a
//! `tools_call` record carries its call's start but is written at its end.
//! [`Reorder`] holds matching lines and gives them back sorted by `ts`,
//! stably, and keeps only the last N for `--lines N`.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    time::UNIX_EPOCH,
};

use serde_json::Value;

/// Most bytes of lines held for sorting without `--lines`: beyond it the
/// earliest lines go out, so order then holds within this window.
const MAX_HELD_BYTES: usize = 64 << 20;

/// One held line and where it sorts.
#[derive(Debug)]
pub struct Held {
    /// Microseconds since the epoch, then the order read.
    key: (i128, u64),
    pub raw: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// Lines waiting to be written in time order.
#[derive(Debug)]
pub struct Reorder {
    /// Earliest on top.
    heap: BinaryHeap<Reverse<Held>>,
    bytes: usize,
    /// Keep only the latest this many (`--lines`).
    last: Option<usize>,
    /// Lines seen: the tie-break that keeps equal times in read order.
    seq: u64,
    /// The time of the last line with a readable `ts`: a line without one
    /// sorts there, next to the lines read around it.
    last_time: i128,
}

impl Reorder {
    /// Hold lines for sorting; with `last`, only the latest `last`.
    pub fn new(last: Option<usize>) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            bytes: 0,
            last,
            seq: 0,
            last_time: i128::MIN,
        }
    }

    /// From now on keep every line (`--follow` after its first `--lines`).
    pub fn keep_all(&mut self) {
        self.last = None;
    }

    /// Take a matching line; returns the lines that must go out now (the
    /// earliest, once more than `MAX_HELD_BYTES` are held without
    /// `--lines`).
    pub fn push(&mut self, rec: &Value, raw: Vec<u8>) -> Vec<Held> {
        if let Some(t) = micros(rec) {
            self.last_time = t;
        }
        self.seq += 1;
        self.bytes += raw.len();
        self.heap.push(Reverse(Held {
            key: (self.last_time, self.seq),
            raw,
        }));
        let mut out = Vec::new();
        match self.last {
            Some(n) => {
                while self.heap.len() > n {
                    self.pop();
                }
            }
            None => {
                while self.bytes > MAX_HELD_BYTES {
                    out.extend(self.pop());
                }
            }
        }
        out
    }

    fn pop(&mut self) -> Option<Held> {
        let Reverse(held) = self.heap.pop()?;
        self.bytes -= held.raw.len();
        Some(held)
    }

    /// Every held line, earliest first; nothing stays held.
    pub fn drain(&mut self) -> Vec<Held> {
        self.bytes = 0;
        let mut all: Vec<Held> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(h)| h)
            .collect();
        all.sort_unstable();
        all
    }
}

/// A record's `ts` as microseconds since the epoch.
pub fn micros(rec: &Value) -> Option<i128> {
    let ts = rec.get("ts")?.as_str()?;
    let t = humantime::parse_rfc3339_weak(ts).ok()?;
    Some(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    })
}
