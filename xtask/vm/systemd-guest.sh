#!/bin/sh
# The systemd lifecycle test, as `cargo xtask vm --set systemd` runs it:
# as root, by a oneshot unit, in a guest whose PID 1 is systemd, with the
# checkout at $MCPGUARD_ROOT and a host-visible directory at $VM_OUT.
# It runs mcpguard/tests/systemd/lifecycle.py on the built binary
# ($MCPGUARD_BIN, default target/debug/mcpguard), copies its output to
# $VM_OUT/systemd.log and exits with its status: 0 = every step passed.
set -u
root=${MCPGUARD_ROOT:?MCPGUARD_ROOT names the checkout}
bin=${MCPGUARD_BIN:-$root/target/debug/mcpguard}
out=${VM_OUT:-/tmp}
mkdir -p "$out"
{
    /usr/bin/python3 "$root/mcpguard/tests/systemd/lifecycle.py" "$bin"
    echo $? >"$out/systemd.rc"
} 2>&1 | tee "$out/systemd.log"
exit "$(cat "$out/systemd.rc" 2>/dev/null || echo 1)"
