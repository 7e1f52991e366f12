//! Sizes both sides agree on: buffer lengths in events and map capacities.

/// Bytes of a path kept in an event (NUL-terminated, truncated beyond).
pub const PATH_LEN: usize = 256;
/// Bytes of a Unix socket path kept (`sun_path` is 108).
pub const UNIX_PATH_LEN: usize = 112;
/// How many argv entries an exec event keeps.
pub const ARGV_SLOTS: usize = 6;
/// Bytes kept of each argv entry.
pub const ARG_LEN: usize = 64;
/// Task command name length (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Port ranges one allow-list prefix can carry.
pub const PORT_RANGES: usize = 16;

/// Guarded cgroups (running servers) the maps can hold at once.
pub const MAX_SERVERS: u32 = 1024;
/// Allow-list prefixes across all servers.
pub const MAX_NET_RULES: u32 = 16384;
/// Syscalls in flight (between enter and exit) tracked at once.
pub const MAX_INFLIGHT: u32 = 8192;

/// Most syscalls the `sys_exit` watch can record.
pub const MAX_WATCHED_SYSCALLS: u32 = 64;
/// Most syscalls the attribute watch (`ATTR_CALLS`) can hold.
pub const MAX_ATTR_CALLS: u32 = 64;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
/// The daemon maps it twice (the wrap-around view), so every MiB here is
/// two of resident memory once traffic has touched it; 4 MiB holds about
/// 12,000 open records, drained at a wakeup per 512 KiB or every 20 ms,
/// which keeps up with well over 200,000 events/s here.
pub const RING_BYTES: u32 = 4 << 20;
