#!/bin/sh
# The /init of the initramfs `cargo xtask vm` packs (xtask/src/vm/initramfs.rs):
# loads the 9p/overlay modules listed in /modlist, mounts the host's root
# read-only over virtio-9p (tag hostroot) under a tmpfs overlay, mounts the
# per-run results directory (tag vmout) at /mcpguard-vm/out and hands over:
# to the script named by GUEST_INIT= (GUEST_MODE=script), or to systemd as
# PID 1 with a oneshot unit that runs that script (GUEST_MODE=systemd;
# the kernel command line names the unit).
# Kernel arguments of the form NAME=value reach this script as variables.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "mcpguard-vm: init: $*" >/dev/console; echo o >/proc/sysrq-trigger; sleep 30; }
for m in $(cat /modlist); do insmod "/lib/modules/$m" || fail "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p hostroot"
mount -t tmpfs tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail overlay
# A guest is no container: systemd would see the host's /.dockerenv,
# ignore the kernel command line and boot the host's services.
rm -f /newroot/.dockerenv
# A fresh /tmp (systemd-tmpfiles would otherwise empty the host's through
# the overlay, file by file).
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
out=/newroot/mcpguard-vm/out
mkdir -p "$out"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout "$out" || fail "9p vmout"
# The guest kernel's modules where modprobe looks for them.
if [ -n "$GUEST_MODULES" ]; then
    mkdir -p "/newroot/lib/modules/$(uname -r)"
    mount --bind "/newroot$GUEST_MODULES" "/newroot/lib/modules/$(uname -r)" || fail modules
fi
if [ "$GUEST_MODE" = systemd ]; then
    # Booted with systemd.unit=mcpguard-vm.service: sysinit, then this.
    cat >/newroot/etc/systemd/system/mcpguard-vm.service <<UNIT
[Unit]
Description=mcpguard VM guest script $GUEST_INIT

[Service]
Type=oneshot
Environment=VM_OUT=/mcpguard-vm/out MCPGUARD_ROOT=$GUEST_ROOT
ExecStart=/bin/sh -c '/bin/sh $GUEST_INIT; echo \$\$? >/mcpguard-vm/out/exit'
StandardOutput=journal+console
StandardError=journal+console
SuccessAction=poweroff-force
FailureAction=poweroff-force
UNIT
    umount /proc /sys /dev
    exec switch_root /newroot /lib/systemd/systemd
fi
for fs in proc sys dev; do mount --move "/$fs" "/newroot/$fs"; done
exec switch_root /newroot /bin/sh "$GUEST_INIT"
