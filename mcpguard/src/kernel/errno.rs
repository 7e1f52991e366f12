//! Errno names as audit records spell them: the common ones by name, any
//! other as `E<number>` (so the record format does not depend on which
//! names a libc or crate knows). The names are `nix`'s; the list below
//! only fixes which errnos a record names.

use nix::errno::Errno;

/// The errnos a record calls by name.
const NAMED: &[Errno] = &[
    Errno::EACCES,
    Errno::EPERM,
    Errno::ENOENT,
    Errno::EEXIST,
    Errno::ENOTDIR,
    Errno::EISDIR,
    Errno::ELOOP,
    Errno::ENAMETOOLONG,
    Errno::EINVAL,
    Errno::EBADF,
    Errno::ECONNREFUSED,
    Errno::ENETUNREACH,
    Errno::EAGAIN,
    Errno::EFAULT,
    Errno::EXDEV,
    Errno::EROFS,
    Errno::EBUSY,
    Errno::ENOEXEC,
    Errno::E2BIG,
    Errno::EMFILE,
];

/// Symbolic name of a (positive) errno value, `E<n>` for the uncommon ones.
pub fn errno_name(errno: i64) -> String {
    NAMED
        .iter()
        .find(|e| **e as i64 == errno)
        // `Errno`'s `Debug` is its constant's name (`EACCES`).
        .map_or_else(|| format!("E{errno}"), |e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_errnos_are_spelled_as_their_constants() {
        for e in NAMED {
            let name = errno_name(*e as i64);
            assert!(
                name.len() > 1
                    && name[1..]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
                "{name}"
            );
            assert_ne!(name, format!("E{}", *e as i64));
        }
        assert_eq!(errno_name(i64::from(libc::EAGAIN)), "EAGAIN");
        assert_eq!(errno_name(i64::from(libc::E2BIG)), "E2BIG");
    }
}
