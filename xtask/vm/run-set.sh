#!/bin/sh
# Runs a `cargo xtask vm` set, in a guest (from guest.sh) or directly on
# the host (`--kernel host` when /boot has no image of the running kernel):
# records the kernel's facts, starts a daemon once for the layer lines it
# logs and its `status`, runs the chosen integration tests as root and
# writes their exit status to $VM_OUT/exit. Inputs: $VM_OUT/run.env.
out=$VM_OUT
. "$out/run.env"
uname -r >"$out/kernel"
cat /sys/kernel/security/lsm >"$out/lsm" 2>/dev/null

# One daemon, for the layers it reports on this kernel.
probe=$(mktemp -d)
"$DAEMON_BIN" daemon --socket "$probe/sock" --audit-log "$probe/audit.jsonl" \
    --cgroup-name mcpguard-vm-probe >/dev/null 2>"$out/daemon.log" &
pid=$!
i=0
while [ ! -S "$probe/sock" ] && [ $i -lt 300 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
"$DAEMON_BIN" status --socket "$probe/sock" >"$out/status.txt" 2>&1
kill $pid 2>/dev/null
wait $pid
rm -rf "$probe"

if [ -z "$TEST_BIN" ]; then
    echo 0 >"$out/exit"
    exit 0
fi
cd "$TEST_CWD" || exit 1
# shellcheck disable=SC2086 # FILTERS is a word list on purpose.
env MCPGUARD_TEST_USER=mcpguard-test MCPGUARD_TEST_OTHER_USER=mcpguard-other \
    MCPGUARD_ESCAPE_ROWS="$out/rows" RUST_BACKTRACE=1 \
    "$TEST_BIN" --test-threads=1 $FILTERS >"$out/test.log" 2>&1
echo $? >"$out/exit"
