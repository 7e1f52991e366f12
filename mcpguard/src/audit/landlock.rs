//! Landlock's own audit records (ABI 7+), as the kernel's audit subsystem
//! sends them: `AUDIT_LANDLOCK_ACCESS` (1423), one per logged denial, and
//! `AUDIT_LANDLOCK_DOMAIN` (1424), a domain's `allocated` record (after its
//! first logged denial: who called `landlock_restrict_self`) and its
//! `deallocated` record (how many denials it had in all).
//!
//! The text is `audit(SECS.MILLIS:SERIAL): key=value ...`. Strings the
//! kernel does not trust (paths, command names) come quoted, or as hex when
//! they hold a quote, a space or a control byte; both are decoded here.
//! Access records name only their domain: [`crate::daemon`] maps domains to
//! launches.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `AUDIT_LANDLOCK_ACCESS`.
pub const ACCESS: u16 = 1423;
/// `AUDIT_LANDLOCK_DOMAIN`.
pub const DOMAIN: u16 = 1424;

/// Keys whose values the kernel writes as untrusted strings (quoted, or
/// hex when they need it).
const UNTRUSTED: &[&str] = &["path", "name", "dev", "comm", "ocomm", "exe"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LandlockParseError {
    #[error("no audit(SECS.MILLIS:SERIAL) stamp in {0:?}")]
    Stamp(String),
    #[error("{kind} record without {field}: {text:?}")]
    Missing {
        kind: u16,
        field: &'static str,
        text: String,
    },
    #[error("not a Landlock record type: {0}")]
    Kind(u16),
}

/// When the kernel made the record, and its serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub time: SystemTime,
    pub serial: u64,
}

/// One Landlock record.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A denial of domain `domain`.
    Access { domain: u64, denial: Box<Denial> },
    /// The domain's first logged denial happened; `pid` called
    /// `landlock_restrict_self` (the launcher, for a guarded server).
    Allocated { domain: u64, pid: u32 },
    /// The domain's last task is gone; it denied `denials` accesses in all,
    /// logged or not.
    Deallocated { domain: u64, denials: u64 },
}

/// The body of a `landlock` audit record: what Landlock refused, as the
/// kernel resolved it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Denial {
    /// The refused rights, e.g. `fs.read_file`, `net.connect_tcp`,
    /// `scope.signal`.
    pub blockers: Vec<String>,
    /// The Landlock domain, in the kernel's hex.
    pub domain: String,
    /// The file the kernel resolved (namespace-relative), or an abstract
    /// socket's name after its leading NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `path` is an abstract Unix socket's name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abstract_addr: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Connect: the destination address and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daddr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<u16>,
    /// Bind: the local address and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saddr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<u16>,
    /// `scope.signal`: the process the signal was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocomm: Option<String>,
    /// Any other field the kernel wrote, as it wrote it (decoded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, String>,
}

/// Parses one Landlock record of netlink type `kind`.
pub fn parse(kind: u16, text: &str) -> Result<(Stamp, Event), LandlockParseError> {
    let (stamp, rest) = stamp(text).ok_or_else(|| LandlockParseError::Stamp(text.into()))?;
    let mut fields = fields(rest);
    let missing = |field| LandlockParseError::Missing {
        kind,
        field,
        text: text.into(),
    };
    let domain_hex = fields.remove("domain").ok_or_else(|| missing("domain"))?;
    let domain = u64::from_str_radix(&domain_hex, 16).map_err(|_| missing("domain"))?;
    let event = match kind {
        ACCESS => Event::Access {
            domain,
            denial: Box::new(denial(domain_hex, fields)),
        },
        DOMAIN => match fields.get("status").map(String::as_str) {
            Some("allocated") => Event::Allocated {
                domain,
                pid: number(&fields, "pid").ok_or_else(|| missing("pid"))?,
            },
            Some("deallocated") => Event::Deallocated {
                domain,
                denials: number(&fields, "denials").ok_or_else(|| missing("denials"))?,
            },
            _ => return Err(missing("status")),
        },
        other => return Err(LandlockParseError::Kind(other)),
    };
    Ok((stamp, event))
}

fn denial(domain: String, mut f: BTreeMap<String, String>) -> Denial {
    let blockers = f
        .remove("blockers")
        .map(|b| b.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut path = f.remove("path");
    // `scope.abstract_unix_socket` names the socket with its leading NUL.
    let abstract_addr = path.as_ref().is_some_and(|p| p.starts_with('\0'));
    if abstract_addr {
        path = path.map(|p| p[1..].to_owned());
    }
    let mut take_num = |k: &str| f.remove(k).and_then(|v| v.parse().ok());
    Denial {
        blockers,
        domain,
        ino: take_num("ino"),
        dest: take_num("dest").and_then(|v: u64| u16::try_from(v).ok()),
        src: take_num("src").and_then(|v: u64| u16::try_from(v).ok()),
        opid: take_num("opid").and_then(|v: u64| u32::try_from(v).ok()),
        path,
        abstract_addr,
        dev: f.remove("dev"),
        daddr: f.remove("daddr"),
        saddr: f.remove("saddr"),
        ocomm: f.remove("ocomm"),
        other: f,
    }
}

fn number<T: std::str::FromStr>(f: &BTreeMap<String, String>, key: &str) -> Option<T> {
    f.get(key)?.parse().ok()
}

/// `audit(1796623362.171:3): ` → the stamp and the rest.
fn stamp(text: &str) -> Option<(Stamp, &str)> {
    let inner = text.strip_prefix("audit(")?;
    let (inner, rest) = inner.split_once("):")?;
    let (time, serial) = inner.split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    let time = UNIX_EPOCH
        + Duration::from_secs(secs.parse().ok()?)
        + Duration::from_millis(millis.parse().ok()?);
    Some((
        Stamp {
            time,
            serial: serial.parse().ok()?,
        },
        rest,
    ))
}

/// The record's `key=value` pairs, values decoded.
fn fields(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start();
        let Some((key, rest)) = s.split_once('=') else {
            return out;
        };
        let (value, rest, quoted) = match rest.strip_prefix('"') {
            Some(q) => {
                let (v, r) = q.split_once('"').unwrap_or((q, ""));
                (v, r, true)
            }
            None => {
                let (v, r) = rest.split_once(' ').unwrap_or((rest, ""));
                (v, r, false)
            }
        };
        let value = match (quoted, UNTRUSTED.contains(&key)) {
            (false, true) => unhex(value).unwrap_or_else(|| value.to_owned()),
            _ => value.to_owned(),
        };
        out.insert(key.to_owned(), value);
        s = rest;
    }
}

/// The kernel's hex form of an untrusted string; `None` when `s` is not
/// hex (`?`, `<too_long>`).
fn unhex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(text: &str) -> Denial {
        match parse(ACCESS, text).unwrap().1 {
            Event::Access { denial, .. } => *denial,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_denials_keep_the_kernel_path_and_inode() {
        let text = r#"audit(1796623362.171:3): domain=173d929d5 blockers=fs.read_file path="/etc/hostname" dev="vda" ino=611"#;
        let (stamp, event) = parse(ACCESS, text).unwrap();
        assert_eq!(stamp.serial, 3);
        assert_eq!(
            stamp.time,
            UNIX_EPOCH + Duration::from_millis(1_796_623_362_171)
        );
        let Event::Access { domain, denial } = event else {
            panic!()
        };
        assert_eq!(domain, 0x173d929d5);
        assert_eq!(denial.domain, "173d929d5");
        assert_eq!(denial.blockers, ["fs.read_file"]);
        assert_eq!(denial.path.as_deref(), Some("/etc/hostname"));
        assert_eq!(
            (denial.dev.as_deref(), denial.ino),
            (Some("vda"), Some(611))
        );
        assert!(denial.other.is_empty());
    }

    #[test]
    fn hex_strings_abstract_sockets_and_signals_are_decoded() {
        let d = access(
            "audit(1.5:7): domain=1 blockers=scope.abstract_unix_socket path=006C6C74657374",
        );
        assert_eq!((d.path.as_deref(), d.abstract_addr), (Some("lltest"), true));
        // A path with a space comes as hex.
        let d = access("audit(1.5:7): domain=1 blockers=fs.execute path=2F746D702F6120622F78 dev=\"vda\" ino=2");
        assert_eq!(d.path.as_deref(), Some("/tmp/a b/x"));
        let d = access(r#"audit(1.5:8): domain=1 blockers=scope.signal opid=29205 ocomm="lltest""#);
        assert_eq!((d.opid, d.ocomm.as_deref()), (Some(29205), Some("lltest")));
        let d = access("audit(1.5:6): domain=1 blockers=net.connect_tcp daddr=127.0.0.1 dest=9");
        assert_eq!((d.daddr.as_deref(), d.dest), (Some("127.0.0.1"), Some(9)));
        let d = access("audit(1.5:6): domain=1 blockers=fs.ioctl_dev,fs.write_file path=\"/dev/x\" ioctlcmd=0x5401");
        assert_eq!(d.blockers, ["fs.ioctl_dev", "fs.write_file"]);
        assert_eq!(d.other["ioctlcmd"], "0x5401");
    }

    #[test]
    fn domain_records_name_the_restricting_pid_and_the_count() {
        let text = r#"audit(1796623362.171:4): domain=173d929d5 status=allocated mode=enforcing pid=30103 uid=0 exe="/tmp/i15/lltest" comm="lltest""#;
        assert_eq!(
            parse(DOMAIN, text).unwrap().1,
            Event::Allocated {
                domain: 0x173d929d5,
                pid: 30103
            }
        );
        let text = "audit(1796623362.171:10): domain=173d929d5 status=deallocated denials=6";
        assert_eq!(
            parse(DOMAIN, text).unwrap().1,
            Event::Deallocated {
                domain: 0x173d929d5,
                denials: 6
            }
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(matches!(
            parse(ACCESS, "no stamp"),
            Err(LandlockParseError::Stamp(_))
        ));
        assert!(matches!(
            parse(ACCESS, "audit(1.1:1): blockers=fs.read_file"),
            Err(LandlockParseError::Missing {
                field: "domain",
                ..
            })
        ));
        assert!(matches!(
            parse(DOMAIN, "audit(1.1:1): domain=1 status=allocated"),
            Err(LandlockParseError::Missing { field: "pid", .. })
        ));
        assert_eq!(
            parse(1300, "audit(1.1:1): domain=1"),
            Err(LandlockParseError::Kind(1300))
        );
    }
}
