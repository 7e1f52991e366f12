//! `bench_loop`: the syscall loops `cargo xtask bench` runs bare and under
//! guard. The same binary does both runs, so the ratio compares like with
//! like.
//!
//! Each mode warms up, then times a loop of one operation and prints one
//! line of `key=value` pairs on stdout (`ns_per_op` wall time,
//! `cpu_ns_per_op` the loop thread's CPU time, which load from other
//! processes on a shared machine does not inflate):
//!
//! - `connect N PORT`: TCP `socket()` + `connect()` to 127.0.0.1:PORT +
//!   `close()` (with `SO_LINGER` 0, so closing sends a reset and leaves no
//!   `TIME_WAIT` socket to exhaust the ephemeral ports);
//! - `open N PATH`: `open(PATH, O_RDONLY)` + `close()`;
//! - `getppid N`: `getppid()`, the cheapest syscall: its cost is the
//!   syscall path itself;
//! - `stat N PATH`: `stat(PATH)`;
//! - `exec N PROGRAM`: `fork()`, `execv(PROGRAM)` in the child, `waitpid()`;
//! - `enoent RATE SECONDS PATH [THREADS]`: failed `open()`s of a path that
//!   does not exist, paced to RATE per second in total (0: as fast as
//!   possible) for SECONDS, each one an audit record when guarded;
//! - `dns N IP PORT NAME`: UDP `socket()` + `connect()` to IP:PORT +
//!   `send()` of an A query for NAME + `recv()` of the answer (checked: same
//!   id, NOERROR, at least one answer) + `close()`, one lookup at a time.
//!
//! Only std and libc: it runs inside a Landlock domain that allows little.

// Only std and libc (see above); the other dependencies are `xtask`'s.
#![allow(unused_crate_dependencies)]

use std::{
    ffi::CString,
    process::ExitCode,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("connect") => connect(&args[1..]),
        Some("open") => open(&args[1..]),
        Some("getppid") => getppid(&args[1..]),
        Some("stat") => stat(&args[1..]),
        Some("exec") => exec(&args[1..]),
        Some("enoent") => enoent(&args[1..]),
        Some("dns") => dns(&args[1..]),
        _ => Err("usage: bench_loop connect N PORT | open N PATH | getppid N | stat N PATH | exec N PROGRAM | enoent RATE SECONDS PATH [THREADS] | dns N IP PORT NAME".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_loop: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Run `op` `n / 20` times untimed, then `n` times timed; print ns/op.
fn timed(name: &str, n: u64, mut op: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..(n / 20).max(1) {
        op()?;
    }
    let cpu = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    let cpu_ns = (thread_cpu_ns() - cpu) as f64 / n as f64;
    println!("op={name} n={n} ns_per_op={ns:.1} cpu_ns_per_op={cpu_ns:.1}");
    Ok(())
}

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the call writes; the clock id is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn getppid(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    timed("getppid", n, || {
        // SAFETY: getppid(2) has no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::getppid() });
        Ok(())
    })
}

fn stat(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    let path: String = arg(args, 1, "PATH")?;
    let c = CString::new(path.clone()).map_err(|_| "NUL in PATH".to_string())?;
    // SAFETY: an all-zero `struct stat` is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    timed("stat", n, || {
        // SAFETY: `c` is NUL-terminated and `st` a live buffer of the right
        // type, both outliving the call.
        if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
            return Err(format!("stat {path}: {}", errno()));
        }
        Ok(())
    })
}

fn connect(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    let port: u16 = arg(args, 1, "PORT")?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    timed("connect", n, || {
        // SAFETY: plain socket(2); the fd is closed below on every path.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", errno()));
        }
        // SAFETY: `fd` is our socket; `linger` and `addr` are live, correctly
        // sized values for these calls.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let err = errno();
        // SAFETY: closing the fd we own, once.
        unsafe { libc::close(fd) };
        if result != 0 {
            return Err(format!("connect 127.0.0.1:{port}: {err}"));
        }
        Ok(())
    })
}

fn open(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    let path: String = arg(args, 1, "PATH")?;
    let c = CString::new(path.clone()).map_err(|_| "NUL in PATH".to_string())?;
    timed("open", n, || {
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {path}: {}", errno()));
        }
        // SAFETY: closing the fd we own, once.
        unsafe { libc::close(fd) };
        Ok(())
    })
}

fn exec(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    let program: String = arg(args, 1, "PROGRAM")?;
    let c = CString::new(program.clone()).map_err(|_| "NUL in PROGRAM".to_string())?;
    // Built before fork: the child may only make async-signal-safe calls.
    let argv = [c.as_ptr(), std::ptr::null()];
    timed("exec", n, || {
        // SAFETY: this program is single-threaded here; the child only calls
        // execv and _exit, both async-signal-safe, with memory prepared
        // before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", errno()));
        }
        if pid == 0 {
            // SAFETY: see above; `argv` is NULL-terminated and outlives exec.
            unsafe {
                libc::execv(c.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child we just forked.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(format!("waitpid: {}", errno()));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("{program} failed: wait status {status:#x}"));
        }
        Ok(())
    })
}

/// One pacing thread: `rate` opens per second (0: unpaced) until `until`.
fn enoent_thread(path: &CString, rate: f64, until: Duration) -> u64 {
    let start = Instant::now();
    let mut done: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= until {
            return done;
        }
        let due = if rate > 0.0 {
            (elapsed.as_secs_f64() * rate) as u64
        } else {
            done + 64
        };
        if done >= due {
            // Ahead of schedule: yield the CPU (the daemon needs it) for a
            // little less than the time one batch covers.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        // At most a millisecond's worth at once, so the deadline holds.
        let batch = (due - done).min(4096);
        for _ in 0..batch {
            // SAFETY: `path` is NUL-terminated and outlives the call; the
            // open is expected to fail, a success is closed at once.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: closing the fd we own, once.
                unsafe { libc::close(fd) };
            }
        }
        done += batch;
    }
}

fn enoent(args: &[String]) -> Result<()> {
    let rate: f64 = arg(args, 0, "RATE")?;
    let secs: f64 = arg(args, 1, "SECONDS")?;
    let path: String = arg(args, 2, "PATH")?;
    let threads: usize = if args.len() > 3 {
        arg(args, 3, "THREADS")?
    } else {
        1
    };
    let c = CString::new(path).map_err(|_| "NUL in PATH".to_string())?;
    let until = Duration::from_secs_f64(secs);
    let per_thread = rate / threads as f64;
    let start = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| enoent_thread(&c, per_thread, until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "op=enoent done={done} secs={elapsed:.3} rate={:.1}",
        done as f64 / elapsed
    );
    Ok(())
}

/// An A query (IN, recursion desired) for `name` with id 0, to patch.
fn dns_query(name: &str) -> Result<Vec<u8>> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad NAME: {name:?}"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

fn dns(args: &[String]) -> Result<()> {
    let n: u64 = arg(args, 0, "N")?;
    let ip: std::net::Ipv4Addr = arg(args, 1, "IP")?;
    let port: u16 = arg(args, 2, "PORT")?;
    let name: String = arg(args, 3, "NAME")?;
    let mut query = dns_query(&name)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // A lost datagram fails the run instead of hanging it.
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    let mut id: u16 = 0;
    let mut buf = [0u8; 512];
    timed("dns", n, || {
        id = id.wrapping_add(1);
        query[..2].copy_from_slice(&id.to_be_bytes());
        // SAFETY: plain socket(2); the fd is closed below on every path.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", errno()));
        }
        // SAFETY: `fd` is our socket; `timeout`, `addr`, `query` and `buf`
        // are live for the calls and the lengths passed are theirs.
        let (result, got) = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let mut result = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if result == 0 && libc::send(fd, query.as_ptr().cast(), query.len(), 0) < 0 {
                result = -1;
            }
            let got = if result == 0 {
                libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)
            } else {
                -1
            };
            (result, got)
        };
        let err = errno();
        // SAFETY: closing the fd we own, once.
        unsafe { libc::close(fd) };
        if result != 0 || got < 0 {
            return Err(format!("dns {name} via {ip}:{port}: {err}"));
        }
        let r = &buf[..got as usize];
        let ok = r.len() >= 12
            && r[..2] == id.to_be_bytes()
            && r[2] & 0x80 != 0
            && r[3] & 0x0f == 0
            && u16::from_be_bytes([r[6], r[7]]) >= 1;
        if !ok {
            return Err(format!("dns {name} via {ip}:{port}: bad answer {r:02x?}"));
        }
        Ok(())
    })
}
