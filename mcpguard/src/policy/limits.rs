//! `[limits]`: how many tasks and how much memory one server may use.
//!
//! Both limits always apply: a policy without the table gets the defaults,
//! because a server with no bound can fork-bomb or balloon the host. The
//! launcher writes them to the server's cgroup before the server joins it
//! (`launch::limits`).

use serde::Deserialize;
use toml::Spanned;

use super::Problem;

/// Tasks (processes and threads) per server when the policy names none:
/// room for a Node or Python server with its worker threads and a few
/// subprocesses, far below the kernel's default `pid_max` (32768+).
pub const DEFAULT_PIDS: u64 = 512;
/// Memory per server when the policy names none (2 GiB).
pub const DEFAULT_MEMORY: u64 = 2 << 30;
/// Smallest memory limit accepted: below this not even an interpreter
/// starts, and the server would only be OOM-killed at launch.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest `pids` accepted: the kernel's `PID_MAX_LIMIT`.
pub const MAX_PIDS: u64 = 4 << 20;

/// Resource bounds of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `pids.max`: tasks the server's cgroup may hold at once.
    pub pids: u64,
    /// Bytes of memory (`memory.max`); swap is not allowed on top.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pids: DEFAULT_PIDS,
            memory: DEFAULT_MEMORY,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub pids: Option<Spanned<i64>>,
    pub memory: Option<Spanned<String>>,
}

/// `pids = N`: 1 to [`MAX_PIDS`].
pub(super) fn check_pids(n: i64) -> Result<u64, Problem> {
    match u64::try_from(n) {
        Ok(n) if (1..=MAX_PIDS).contains(&n) => Ok(n),
        _ => Err(Problem::BadPids { max: MAX_PIDS }),
    }
}

/// `memory = "512M"`: a whole number of bytes, or of K, M or G (powers of
/// 1024, either case), at least [`MIN_MEMORY`].
pub(super) fn parse_memory(text: &str) -> Result<u64, Problem> {
    let bad = || Problem::BadSize;
    let (digits, shift) = match text.char_indices().last().ok_or_else(bad)? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or(Problem::SizeTooLarge)?;
    if bytes < MIN_MEMORY {
        return Err(Problem::SizeTooSmall { min: MIN_MEMORY });
    }
    Ok(bytes)
}

/// Bytes as a policy would write them: the largest unit that divides them.
pub fn show_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_take_binary_suffixes_in_either_case() {
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("65536K"), Ok(64 << 20));
        assert_eq!(parse_memory("33554432"), Ok(32 << 20));
        for bad in ["", "G", "1.5G", "1 G", "-1G", "1T", "1GB", "0x10M"] {
            assert_eq!(parse_memory(bad), Err(Problem::BadSize), "{bad:?}");
        }
        assert_eq!(
            parse_memory("1M"),
            Err(Problem::SizeTooSmall { min: MIN_MEMORY })
        );
        assert_eq!(
            parse_memory("99999999999999999G"),
            Err(Problem::SizeTooLarge)
        );
    }

    #[test]
    fn pids_within_the_kernel_range() {
        assert_eq!(check_pids(1), Ok(1));
        assert_eq!(check_pids(512), Ok(512));
        for bad in [0, -1, (MAX_PIDS + 1) as i64] {
            assert_eq!(
                check_pids(bad),
                Err(Problem::BadPids { max: MAX_PIDS }),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(show_size(2 << 30), "2G");
        assert_eq!(show_size(1536 << 20), "1536M");
        assert_eq!(show_size(1000), "1000");
    }
}
