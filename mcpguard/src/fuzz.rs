//! The runner behind the `fuzz` tests of [`crate::policy`], [`crate::mcp`]
//! and [`crate::dns`]: a seeded mutation loop over a corpus of valid inputs.
//!
//! Random bytes rarely get past a parser's first check, so inputs are valid
//! seeds with a few byte-level mutations each (flips, insertions, deletions,
//! duplicated runs, splices from another seed, tokens from a per-target
//! dictionary); a target may also generate structured inputs itself. Each
//! input runs through the target's property check, which panics on a
//! violation; the runner adds the properties every target shares: no panic
//! and no input slower than [`per_input`] (a watchdog aborts the process on
//! a real hang, printing the input).
//!
//! `MCPGUARD_FUZZ_SECS` sets each target's time budget (default
//! [`DEFAULT_SECS`], which keeps `cargo xtask test` short; `cargo xtask fuzz`
//! runs longer in release mode). A failure prints the seed; setting
//! `MCPGUARD_FUZZ_SEED` to it replays the same inputs.
//!
//! Not `bolero` (0.13.7, weighed in issue 14): its `#[test]` mode takes
//! seeds only from `__fuzz__/<test>/corpus` files and bounds no single
//! input, so this mutator (rewritten over its `Driver`) and the hang watchdog
//! would stay, for 19 new packages in Cargo.lock (and second versions of
//! rand, getrandom, indexmap, winnow) and `cargo install cargo-bolero` for
//! the coverage-guided runs.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

/// Each target's budget when `MCPGUARD_FUZZ_SECS` is unset.
const DEFAULT_SECS: f64 = 2.0;
/// Largest input a mutation may produce: well past every parser's first
/// length check, small enough to keep iterations fast.
const MAX_INPUT: usize = 64 << 10;

/// splitmix64: tiny, seedable, and good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Valid inputs and the tokens that matter to one parser.
pub struct Corpus {
    pub seeds: Vec<Vec<u8>>,
    pub dict: Vec<Vec<u8>>,
}

impl Corpus {
    pub fn new(seeds: &[&[u8]], dict: &[&[u8]]) -> Corpus {
        Corpus {
            seeds: seeds.iter().map(|s| s.to_vec()).collect(),
            dict: dict.iter().map(|s| s.to_vec()).collect(),
        }
    }

    /// A seed with one to four mutations.
    pub fn mutant(&self, rng: &mut Rng) -> Vec<u8> {
        let mut data = rng.pick(&self.seeds).clone();
        for _ in 0..=rng.below(4) {
            self.mutate(&mut data, rng);
        }
        data.truncate(MAX_INPUT);
        data
    }

    fn mutate(&self, data: &mut Vec<u8>, rng: &mut Rng) {
        let at = |rng: &mut Rng, data: &Vec<u8>| rng.below(data.len() + 1);
        match rng.below(9) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *rng.pick(&[0, 0xff, 0x7f, 0x80, b'"', b'\\', b'\n', b'\r', b'.']);
            }
            2 => {
                let i = at(rng, data);
                data.insert(i, rng.next_u64() as u8);
            }
            3 if !data.is_empty() => {
                let i = rng.below(data.len());
                let n = 1 + rng.below((data.len() - i).min(16));
                data.drain(i..i + n);
            }
            4 if !data.is_empty() => {
                // Duplicate a run, sometimes many times (deep nesting,
                // long lists, repeated records).
                let i = rng.below(data.len());
                let n = 1 + rng.below((data.len() - i).min(64));
                let run = data[i..i + n].to_vec();
                let times = if rng.one_in(8) { 1 + rng.below(256) } else { 1 };
                let j = at(rng, data);
                for _ in 0..times {
                    data.splice(j..j, run.iter().copied());
                }
            }
            5 => {
                let other = rng.pick(&self.seeds);
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = 1 + rng.below(other.len() - i);
                    let j = at(rng, data);
                    data.splice(j..j, other[i..i + n].iter().copied());
                }
            }
            6 if !data.is_empty() => {
                let n = rng.below(data.len());
                data.truncate(n);
            }
            _ if !self.dict.is_empty() => {
                let token = rng.pick(&self.dict).clone();
                let j = at(rng, data);
                if rng.one_in(2) || data.is_empty() {
                    data.splice(j..j, token);
                } else {
                    // Overwrite in place, keeping the length.
                    let end = (j + token.len()).min(data.len());
                    data.splice(j..end, token);
                }
            }
            _ => {}
        }
    }
}

/// Each target's time budget.
pub fn budget() -> Duration {
    let secs = std::env::var("MCPGUARD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs_f64(secs)
}

/// The bound on one input: generous for a debug build on a busy machine,
/// far below what a quadratic blow-up or a hang takes.
pub fn per_input() -> Duration {
    Duration::from_secs(2)
}

fn seed() -> u64 {
    std::env::var("MCPGUARD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// The input being checked, and since when (for the watchdog).
type Current = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

fn show(input: &[u8]) -> String {
    const SHOWN: usize = 8 << 10;
    let mut s = input[..input.len().min(SHOWN)].escape_ascii().to_string();
    if input.len() > SHOWN {
        s.push_str(&format!("... ({} bytes)", input.len()));
    }
    s
}

/// Run `check` on inputs from `input` until the budget is spent; returns
/// the number of inputs run. Panics (with the seed and the input) on the
/// first violated property.
pub fn run(
    target: &str,
    mut input: impl FnMut(&mut Rng) -> Vec<u8>,
    mut check: impl FnMut(&[u8]),
) -> u64 {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let budget = budget();
    let bound = per_input();
    let current: Current = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (current, done, target) = (current.clone(), done.clone(), target.to_owned());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let cur = current.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((started, data)) = &*cur {
                    if started.elapsed() > bound * 5 {
                        eprintln!(
                            "fuzz {target}: seed {seed}: input hangs (> {:?}): {}",
                            bound * 5,
                            show(data)
                        );
                        std::process::abort();
                    }
                }
            }
        })
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        let data = input(&mut rng);
        *current.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), data.clone()));
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&data)));
        let took = t.elapsed();
        *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        n += 1;
        if let Err(panic) = outcome {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!(
                "fuzz {target}: seed {seed}, input {n}: {msg}\ninput: {}",
                show(&data)
            );
        }
        assert!(
            took < bound,
            "fuzz {target}: seed {seed}, input {n} took {took:?} (bound {bound:?}): {}",
            show(&data)
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watchdog.join();
    // xtask's `fuzz` reads this line for its report.
    eprintln!(
        "fuzz {target}: {n} inputs in {:?} (seed {seed})",
        start.elapsed()
    );
    n
}
