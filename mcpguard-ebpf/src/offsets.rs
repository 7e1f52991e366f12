//! Tracepoint field offsets, set by the daemon at load time from tracefs
//! `format` files, so no kernel layout is hard-coded here.

macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        mod globals {
            $(
                #[unsafe(no_mangle)]
                pub static $name: u32 = 0;
            )*
        }
        $(
            #[allow(non_snake_case)]
            #[inline(always)]
            pub fn $name() -> usize {
                // SAFETY: a plain read of a global the loader rewrote; the
                // volatile read keeps the compiler from folding the 0.
                unsafe { core::ptr::read_volatile(&globals::$name) as usize }
            }
        )*
    };
}

offsets!(
    OFF_OPENAT_DFD,
    OFF_OPENAT_FILENAME,
    OFF_OPENAT_FLAGS,
    OFF_OPENAT_MODE,
    OFF_OPENAT2_DFD,
    OFF_OPENAT2_FILENAME,
    OFF_OPENAT2_HOW,
    OFF_OPEN_FILENAME,
    OFF_OPEN_FLAGS,
    OFF_OPEN_MODE,
    OFF_CREAT_PATHNAME,
    OFF_CREAT_MODE,
    OFF_SYS_EXIT_RET,
    OFF_SYS_EXIT_NR,
    OFF_SYS_ENTER_NR,
    OFF_IO_URING_OPCODE,
    OFF_EXECVE_FILENAME,
    OFF_EXECVE_ARGV,
    OFF_EXECVEAT_FILENAME,
    OFF_EXECVEAT_ARGV,
    OFF_SCHED_EXEC_OLD_PID,
    OFF_SCHED_FORK_PARENT_PID,
    OFF_SCHED_FORK_CHILD_PID,
    OFF_CONNECT_ADDR,
    OFF_SCHED_EXEC_FILENAME,
    OFF_LINK_OLDNAME,
    OFF_LINK_NEWNAME,
    OFF_LINKAT_OLDDFD,
    OFF_LINKAT_OLDNAME,
    OFF_LINKAT_NEWDFD,
    OFF_LINKAT_NEWNAME,
    OFF_LINKAT_FLAGS,
    OFF_SYMLINK_OLDNAME,
    OFF_SYMLINK_NEWNAME,
    OFF_SYMLINKAT_OLDNAME,
    OFF_SYMLINKAT_NEWDFD,
    OFF_SYMLINKAT_NEWNAME,
    OFF_RENAME_OLDNAME,
    OFF_RENAME_NEWNAME,
    OFF_RENAMEAT_OLDDFD,
    OFF_RENAMEAT_OLDNAME,
    OFF_RENAMEAT_NEWDFD,
    OFF_RENAMEAT_NEWNAME,
    OFF_RENAMEAT2_OLDDFD,
    OFF_RENAMEAT2_OLDNAME,
    OFF_RENAMEAT2_NEWDFD,
    OFF_RENAMEAT2_NEWNAME,
    OFF_RENAMEAT2_FLAGS,
    OFF_MKDIR_PATHNAME,
    OFF_MKDIR_MODE,
    OFF_MKDIRAT_DFD,
    OFF_MKDIRAT_PATHNAME,
    OFF_MKDIRAT_MODE,
    OFF_UNLINK_PATHNAME,
    OFF_UNLINKAT_DFD,
    OFF_UNLINKAT_PATHNAME,
    OFF_UNLINKAT_FLAG,
    OFF_RMDIR_PATHNAME,
    OFF_CHDIR_FILENAME,
);
