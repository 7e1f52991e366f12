#!/bin/sh
# PID 1 of a `cargo xtask vm` guest in script mode (xtask/vm/init.sh hands
# over to it, /tmp already a tmpfs): mounts what the daemon and the tests
# expect (tmpfs /run, cgroup2, bpffs, tracefs, debugfs, securityfs),
# brings up loopback, runs run-set.sh next to it and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export VM_OUT=/mcpguard-vm/out
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf -o mode=700 bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname mcpguard-vm
date -u +%s >"$VM_OUT/guest-clock"
sh "$(dirname "$0")/run-set.sh"
echo "mcpguard-vm: done, exit $(cat "$VM_OUT/exit" 2>/dev/null)" >/dev/console
sync
echo o >/proc/sysrq-trigger
sleep 60
