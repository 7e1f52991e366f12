//! Which layer holds each guarantee that depends on the kernel's Landlock
//! ABI, on a given kernel: one pure table from [`Facts`] to, per
//! [`Class`], the layers holding it and whether it is held, weaker or
//! missing there.
//!
//! `mcpguard status`, the launch record's `guarantees`, the launch
//! refusal (a policy runs without a missing class only when its
//! `[kernel] accept_weaker` names it), `mcpguard doctor` and the README's
//! kernel table all read this table, so they cannot disagree.
//!
//! | class | held by, Landlock new enough | below that ABI |
//! |---|---|---|
//! | `fs.truncate` (ABI 3) | Landlock + read-only view | read-only view alone |
//! | `fs.ioctl_dev` (ABI 5) | Landlock | weaker: devices the policy lets it open |
//! | `net.tcp` (ABI 4) | eBPF alone, on every kernel | eBPF alone |
//! | `scope.abstract_unix_socket` (ABI 6) | Landlock | missing |
//! | `scope.signal` (ABI 6) | Landlock | missing |

use serde::{Deserialize, Serialize};

/// A guarantee whose strength depends on the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// `truncate(2)` of a file outside the write grants.
    #[serde(rename = "fs.truncate")]
    FsTruncate,
    /// `ioctl(2)` on device files.
    #[serde(rename = "fs.ioctl_dev")]
    FsIoctlDev,
    /// TCP connect and bind by address and port.
    #[serde(rename = "net.tcp")]
    NetTcp,
    /// Connecting to abstract Unix sockets of processes outside the server
    /// (D-Bus, X11, a debugger's socket).
    #[serde(rename = "scope.abstract_unix_socket")]
    ScopeAbstractUnixSocket,
    /// Signalling the user's other processes (`kill(2)` by number).
    #[serde(rename = "scope.signal")]
    ScopeSignal,
}

impl Class {
    /// Every class, in table order.
    pub const ALL: [Class; 5] = [
        Class::FsTruncate,
        Class::FsIoctlDev,
        Class::NetTcp,
        Class::ScopeAbstractUnixSocket,
        Class::ScopeSignal,
    ];

    /// The name policies, records and `status` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::FsTruncate => "fs.truncate",
            Self::FsIoctlDev => "fs.ioctl_dev",
            Self::NetTcp => "net.tcp",
            Self::ScopeAbstractUnixSocket => "scope.abstract_unix_socket",
            Self::ScopeSignal => "scope.signal",
        }
    }

    /// The class named `name`.
    pub fn from_name(name: &str) -> Option<Class> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The Landlock ABI from which Landlock holds this class itself.
    pub fn landlock_abi(self) -> u32 {
        match self {
            Self::FsTruncate => 3,
            Self::NetTcp => 4,
            Self::FsIoctlDev => 5,
            Self::ScopeAbstractUnixSocket | Self::ScopeSignal => 6,
        }
    }

    /// Whether `[kernel] accept_weaker` may name it: only a class that can
    /// be missing while launches still go on.
    pub fn acceptable(self) -> bool {
        matches!(self, Self::ScopeAbstractUnixSocket | Self::ScopeSignal)
    }

    /// What the server is kept from, in a few words.
    fn guarantee(self) -> &'static str {
        match self {
            Self::FsTruncate => "truncating files outside its write grants",
            Self::FsIoctlDev => "ioctl on devices",
            Self::NetTcp => "TCP connects and binds the policy does not allow",
            Self::ScopeAbstractUnixSocket => {
                "connecting to abstract Unix sockets outside it (D-Bus, X11, debuggers)"
            }
            Self::ScopeSignal => "signalling the user's other processes",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A layer that can hold a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The server's Landlock ruleset.
    Landlock,
    /// The private mount namespace's read-only view (`EROFS` outside the
    /// write grants).
    ReadOnlyView,
    /// The cgroup connect4/6, sendmsg4/6 and bind4/6 programs.
    Ebpf,
}

impl Layer {
    /// The name records and `status` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Landlock => "landlock",
            Self::ReadOnlyView => "read_only_view",
            Self::Ebpf => "ebpf",
        }
    }
}

/// How well a class is held on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In full.
    Held,
    /// In part; launches go on and their record says so.
    Weaker,
    /// By nothing; launches are refused unless the policy accepts it.
    Missing,
}

/// One class on one kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub class: Class,
    pub state: State,
    /// The layers holding it (empty when missing).
    pub held_by: Vec<Layer>,
    /// Why, on this kernel.
    pub detail: String,
}

impl Row {
    /// The holding layers' names joined by `+` (empty when none), as the
    /// startup log and `status` print them.
    pub fn held_by_names(&self) -> String {
        self.held_by
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// What the table needs to know about the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Facts {
    /// The kernel's Landlock ABI; `None` without Landlock.
    pub landlock_abi: Option<u32>,
    /// The eBPF connect and bind programs are attached.
    pub ebpf_network: bool,
}

/// The first Linux release with Landlock ABI `abi`.
fn linux_of(abi: u32) -> &'static str {
    match abi {
        0 | 1 => "5.13",
        2 => "5.19",
        3 => "6.2",
        4 => "6.7",
        5 => "6.10",
        6 => "6.12",
        _ => "6.15",
    }
}

/// Every class on a kernel with `facts`.
pub fn table(facts: Facts) -> Vec<Row> {
    Class::ALL.into_iter().map(|c| row(c, facts)).collect()
}

/// `class` on a kernel with `facts`.
pub fn row(class: Class, facts: Facts) -> Row {
    let min = class.landlock_abi();
    let by_landlock = facts.landlock_abi.is_some_and(|abi| abi >= min);
    let lacks = match facts.landlock_abi {
        Some(abi) => format!(
            "Landlock ABI {abi} does not hold {} (ABI {min}, Linux {})",
            class.guarantee(),
            linux_of(min)
        ),
        None => "no Landlock".to_owned(),
    };
    let (state, held_by, detail) = match class {
        Class::NetTcp if facts.ebpf_network => (
            State::Held,
            vec![Layer::Ebpf],
            "the cgroup connect and bind programs decide by address and port on every \
             supported kernel; Landlock's TCP port rules are not used (they refuse without \
             a record)"
                .to_owned(),
        ),
        Class::NetTcp => (
            State::Missing,
            vec![],
            "the eBPF connect and bind programs are not attached; launches are refused".to_owned(),
        ),
        Class::FsTruncate if by_landlock => (
            State::Held,
            vec![Layer::Landlock, Layer::ReadOnlyView],
            "Landlock's truncate right, and EROFS from the read-only view".to_owned(),
        ),
        Class::FsTruncate => (
            State::Held,
            vec![Layer::ReadOnlyView],
            format!("{lacks}; the read-only view refuses it (EROFS)"),
        ),
        _ if by_landlock => (
            State::Held,
            vec![Layer::Landlock],
            format!("Landlock (ABI {min}+)"),
        ),
        Class::FsIoctlDev if facts.landlock_abi.is_some() => (
            State::Weaker,
            vec![Layer::Landlock],
            format!(
                "{lacks}: the server can ioctl a device it may open under the policy or \
                 inherits (its stdio); opening one still needs a grant"
            ),
        ),
        _ => (
            State::Missing,
            vec![],
            format!("{lacks}, and no other layer holds it on this kernel"),
        ),
    };
    Row {
        class,
        state,
        held_by,
        detail,
    }
}

/// The classes a launch would run without: missing on this kernel and
/// not named by the policy's `accept_weaker` (`net.tcp` excepted: without
/// the eBPF programs the launch is refused before this is asked).
pub fn unaccepted(rows: &[Row], accepted: &[Class]) -> Vec<Class> {
    rows.iter()
        .filter(|r| r.state == State::Missing && r.class.acceptable())
        .map(|r| r.class)
        .filter(|c| !accepted.contains(c))
        .collect()
}

/// The classes a launch runs with less than the full guarantee: weaker,
/// or missing and accepted.
pub fn weaker(rows: &[Row]) -> Vec<Class> {
    rows.iter()
        .filter(|r| r.state != State::Held)
        .map(|r| r.class)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(abi: Option<u32>) -> Vec<(Class, State, Vec<Layer>)> {
        table(Facts {
            landlock_abi: abi,
            ebpf_network: true,
        })
        .into_iter()
        .map(|r| (r.class, r.state, r.held_by))
        .collect()
    }

    #[test]
    fn every_abi_gets_the_strongest_layer_it_has() {
        use Class::*;
        use Layer::*;
        use State::*;
        for abi in 1..=7 {
            let rows = at(Some(abi));
            let truncate = if abi >= 3 {
                vec![Landlock, ReadOnlyView]
            } else {
                vec![ReadOnlyView]
            };
            let (ioctl, ioctl_by) = if abi >= 5 {
                (Held, vec![Landlock])
            } else {
                (Weaker, vec![Landlock])
            };
            let (scope, scope_by) = if abi >= 6 {
                (Held, vec![Landlock])
            } else {
                (Missing, vec![])
            };
            assert_eq!(
                rows,
                vec![
                    (FsTruncate, Held, truncate),
                    (FsIoctlDev, ioctl, ioctl_by),
                    (NetTcp, Held, vec![Ebpf]),
                    (ScopeAbstractUnixSocket, scope, scope_by.clone()),
                    (ScopeSignal, scope, scope_by),
                ],
                "ABI {abi}"
            );
        }
    }

    #[test]
    fn without_landlock_or_ebpf_the_classes_they_hold_are_missing() {
        let rows = at(None);
        assert_eq!(
            rows[0].1,
            State::Held,
            "the read-only view needs no Landlock"
        );
        assert!(rows[1..]
            .iter()
            .filter(|r| r.0 != Class::NetTcp)
            .all(|r| r.1 == State::Missing));
        let no_ebpf = row(
            Class::NetTcp,
            Facts {
                landlock_abi: Some(7),
                ebpf_network: false,
            },
        );
        assert_eq!(no_ebpf.state, State::Missing);
        assert!(no_ebpf.held_by.is_empty());
    }

    #[test]
    fn details_name_the_abi_the_kernel_has_and_the_one_it_needs() {
        let facts = Facts {
            landlock_abi: Some(2),
            ebpf_network: true,
        };
        let signal = row(Class::ScopeSignal, facts);
        assert_eq!(
            signal.detail,
            "Landlock ABI 2 does not hold signalling the user's other processes (ABI 6, \
             Linux 6.12), and no other layer holds it on this kernel"
        );
        assert!(row(Class::FsTruncate, facts)
            .detail
            .contains("(ABI 3, Linux 6.2)"));
    }

    #[test]
    fn only_missing_scopes_refuse_and_accepting_them_lets_the_launch_go() {
        let old = table(Facts {
            landlock_abi: Some(4),
            ebpf_network: true,
        });
        assert_eq!(
            unaccepted(&old, &[]),
            vec![Class::ScopeAbstractUnixSocket, Class::ScopeSignal]
        );
        assert_eq!(
            unaccepted(&old, &[Class::ScopeSignal]),
            vec![Class::ScopeAbstractUnixSocket]
        );
        assert!(unaccepted(&old, &[Class::ScopeSignal, Class::ScopeAbstractUnixSocket]).is_empty());
        assert_eq!(
            weaker(&old),
            vec![
                Class::FsIoctlDev,
                Class::ScopeAbstractUnixSocket,
                Class::ScopeSignal
            ]
        );
        let new = table(Facts {
            landlock_abi: Some(6),
            ebpf_network: true,
        });
        assert!(unaccepted(&new, &[]).is_empty());
        assert!(weaker(&new).is_empty());
    }

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for layer in [Layer::Landlock, Layer::ReadOnlyView, Layer::Ebpf] {
            assert_eq!(serde_json::to_value(layer).unwrap(), layer.name());
        }
        for class in Class::ALL {
            let json = serde_json::to_value(class).unwrap();
            assert_eq!(json, class.name());
            assert_eq!(Class::from_name(class.name()), Some(class));
        }
        assert_eq!(Class::from_name("scope.signals"), None);
    }
}
