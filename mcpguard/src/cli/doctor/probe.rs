//! The probe server `mcpguard doctor` launches through the daemon (the
//! hidden `__doctor-probe` mode of this binary): each attempt tries one
//! thing its built-in policy forbids and says what it saw, an errno name
//! (`EACCES`), a DNS answer code (`NXDOMAIN`), `ok` when the attempt
//! succeeded, or `timeout`. It never reads the client's input and writes
//! only its results, as JSON lines on stderr.

use std::{
    io,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::{
        linux::net::SocketAddrExt,
        unix::{fs::PermissionsExt, net::UnixStream},
    },
    path::PathBuf,
    process::{Command, Stdio},
    str::FromStr,
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use serde::{Deserialize, Serialize};

/// How long a network attempt may take.
const WAIT: Duration = Duration::from_secs(2);

/// What the attempts aim at, chosen by `mcpguard doctor` (and passed to
/// the probe as one JSON argument).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Targets {
    /// A file of the caller's the policy does not name (read, chmod).
    pub file: PathBuf,
    /// An address the policy does not allow.
    pub connect: SocketAddr,
    /// A name the policy does not allow.
    pub name: String,
    /// A program outside the policy's exec allowance.
    pub exec: PathBuf,
    /// A process of the caller's outside the guard (`mcpguard doctor`).
    pub pid: u32,
    /// An abstract Unix socket outside the guard (doctor listens on it).
    pub abstract_name: String,
}

/// One attempt's result, as the probe reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seen {
    pub class: String,
    pub seen: String,
}

/// The errno of a failed call, by name.
fn errno(e: &io::Error) -> String {
    e.raw_os_error().map_or_else(
        || e.to_string(),
        |n| format!("{:?}", nix::errno::Errno::from_raw(n)),
    )
}

fn outcome<T>(r: io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            "timeout".into()
        }
        Err(e) => errno(&e),
    }
}

pub fn read(t: &Targets) -> String {
    outcome(std::fs::read(&t.file))
}

pub fn connect(t: &Targets) -> String {
    outcome(TcpStream::connect_timeout(&t.connect, WAIT))
}

/// A DNS query for the name, sent where the C library sends it (the first
/// `nameserver` of /etc/resolv.conf, else 127.0.0.1): the daemon's egress
/// programs take it to the server's own resolver. The answer's code.
pub fn name(t: &Targets) -> String {
    let server = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|text| crate::dns::upstream_from_resolv_conf(&text))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)));
    let Ok(qname) = Name::from_str(&format!("{}.", t.name)) else {
        return format!("bad name {:?}", t.name);
    };
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(qname, RecordType::A));
    let Ok(bytes) = query.to_vec() else {
        return "cannot encode the query".into();
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let asked = UdpSocket::bind(local).and_then(|s| {
        s.set_read_timeout(Some(WAIT))?;
        s.send_to(&bytes, server)?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    });
    match asked {
        Ok(reply) => match Message::from_vec(&reply) {
            Ok(m) => format!("{:?}", m.metadata.response_code).to_ascii_uppercase(),
            Err(_) => "unparsable answer".into(),
        },
        Err(e) => outcome::<()>(Err(e)),
    }
}

pub fn exec(t: &Targets) -> String {
    // The probe's own stdout and stderr: opening /dev/null for writing is
    // refused too, and its refusal would pass for the exec's.
    outcome(
        Command::new(&t.exec)
            .env_clear()
            .stdin(Stdio::null())
            .status(),
    )
}

pub fn chmod(t: &Targets) -> String {
    // The mode doctor created the file with: nothing changes if it works.
    outcome(std::fs::set_permissions(
        &t.file,
        std::fs::Permissions::from_mode(0o600),
    ))
}

/// Signal 0: the kernel checks the right to signal, and delivers nothing.
pub fn signal(t: &Targets) -> String {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(t.pid).unwrap_or(i32::MAX));
    match nix::sys::signal::kill(pid, None) {
        Ok(()) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

pub fn abstract_unix(t: &Targets) -> String {
    outcome(
        std::os::unix::net::SocketAddr::from_abstract_name(t.abstract_name.as_bytes())
            .and_then(|addr| UnixStream::connect_addr(&addr)),
    )
}
