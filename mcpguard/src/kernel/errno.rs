//! Errno names as audit records spell them: the common ones by name, any
//! other as `E<number>` (so the record format does not depend on which
//! names a libc or crate knows).

/// Symbolic name of a (positive) errno value, `E<n>` for the uncommon ones.
pub fn errno_name(errno: i64) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::EACCES, "EACCES"),
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::EINVAL, "EINVAL"),
        (libc::EBADF, "EBADF"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::ENETUNREACH, "ENETUNREACH"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::EFAULT, "EFAULT"),
        (libc::EXDEV, "EXDEV"),
        (libc::EROFS, "EROFS"),
        (libc::EBUSY, "EBUSY"),
        (libc::ENOEXEC, "ENOEXEC"),
        (libc::E2BIG, "E2BIG"),
        (libc::EMFILE, "EMFILE"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| i64::from(*n) == errno)
        .map_or_else(|| format!("E{errno}"), |(_, name)| (*name).to_string())
}
