#!/bin/busybox sh
# Guest /init of `cargo xtask rdma-vm` (busybox sh, PID 1 of the initramfs): loads the virtio,
# 9p and Soft-RoCE modules, mounts the results share and the host's root (read-only) over
# virtio-9p, adds rxe0 on eth0, runs the host's job file (one `step` per command, chrooted into
# the host root) and powers off.
#
# The host reads the results share:
#   ready         guest uptime (s) when rxe0 was usable
#   N.out         output (stdout and stderr) of command N
#   N.status      "<exit status> <start> <end>" (guest uptime, s)
#   done          every step ran
#   setup-failed  why the guest could not get ready

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /results /host
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# What the commands see: the host's usual PATH, a writable HOME.
guest_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

have_results=
die() {
    echo "rdma-vm: setup failed: $*"
    if [ -n "$have_results" ]; then
        echo "$*" >/results/setup-failed
        umount /results
    fi
    sync
    poweroff -f
    sleep 5
    exit 1
}

# Modules in dependency order (`modprobe --show-depends` on the host, first use kept).
for m in $(cat /modules); do
    insmod "/lib/modules/$m" || die "insmod $m"
done

# The virtio-9p devices bind as 9pnet_virtio loads; allow them a moment.
mount9p() {
    tries=0
    until mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$3" "$1" "$2" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -ge 50 ] && return 1
        sleep 0.1
    done
}
mount9p results /results rw || die "mount results share"
have_results=1
mount9p hostroot /host ro,cache=loose || die "mount host root"

# Host directories under /tmp or /run the commands need (a workspace cloned there, listed by
# the host in `keep`): bound aside now, moved back over the guest's tmpfs below.
kept=0
if [ -s /results/keep ]; then
    while read -r dir; do
        [ -n "$dir" ] || continue
        mkdir -p "/keep/$kept"
        mount --bind "/host$dir" "/keep/$kept" || die "bind $dir"
        kept=$((kept + 1))
    done </results/keep
fi

# The host root is read-only: the guest's own kernel filesystems and writable scratch go on top.
mount -t proc proc /host/proc || die "mount /host/proc"
mount -t sysfs sysfs /host/sys || die "mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || die "mount /host/dev"
# cgroup v2, for the tests of leases in cgroups of their own (they skip without it).
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || echo "rdma-vm: no cgroup2 mount; the cgroup tests will skip" >&2
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm || die "mount /host/dev/shm"
mount -t devpts devpts /host/dev/pts || die "mount /host/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || die "mount /host/tmp"
[ -d /host/run ] && mount -t tmpfs tmpfs /host/run
kept=0
if [ -s /results/keep ]; then
    while read -r dir; do
        [ -n "$dir" ] || continue
        mkdir -p "/host$dir" || die "mkdir $dir"
        mount --move "/keep/$kept" "/host$dir" || die "move $dir back"
        kept=$((kept + 1))
    done </results/keep
fi

# Network: loopback (ibv_rc_pingpong and TCP tests talk over 127.0.0.1) and eth0 for rxe. With
# duplicate address detection on, the link-local GID stays tentative for 1-2 s and a queue
# pair's RTR transition times out.
ip link set lo up || die "ip link set lo up"
for c in all default eth0; do
    [ -e "/proc/sys/net/ipv6/conf/$c/accept_dad" ] && echo 0 >"/proc/sys/net/ipv6/conf/$c/accept_dad"
done
ip link set eth0 up || die "ip link set eth0 up"
PATH=$guest_path /bin/busybox chroot /host rdma link add rxe0 type rxe netdev eth0 \
    || die "rdma link add rxe0 type rxe netdev eth0"

# Wait (at most 10 s) for the port to be ACTIVE and GID 0 (IPv6 link-local) to be set.
port=/sys/class/infiniband/rxe0/ports/1
tries=0
until grep -q ACTIVE "$port/state" 2>/dev/null \
    && [ -n "$(cat "$port/gids/0" 2>/dev/null | tr -d '0:')" ]; do
    tries=$((tries + 1))
    [ "$tries" -ge 100 ] && die "rxe0 port 1 not ACTIVE with GID 0 after 10 s: $(cat "$port/state" 2>&1)"
    sleep 0.1
done

# RoCE resolves a GID through the kernel's routes: a queue pair's RTR fails with "Network is
# unreachable" until eth0's link-local route is in place, which can trail GID 0 by a moment
# (seen once in the first test after boot). Wait for it too (at most 5 s, then go on).
tries=0
until ip -6 route show dev eth0 2>/dev/null | grep -q '^fe80::/64' \
    && ! ip -6 addr show dev eth0 2>/dev/null | grep -q tentative; do
    tries=$((tries + 1))
    if [ "$tries" -ge 50 ]; then
        echo "rdma-vm: eth0 has no link-local route after 5 s; going on" >&2
        break
    fi
    sleep 0.1
done

uptime_s() {
    read -r up _ </proc/uptime
    echo "$up"
}
uptime_s >/results/ready
echo "rdma-vm: rxe0 ready, GID 0 $(cat "$port/gids/0")"

# step N ARGV...: runs ARGV in the host root, in $workdir (set by the job file).
step() {
    n=$1
    shift
    echo "rdma-vm: [$n] $*"
    start=$(uptime_s)
    PATH=$guest_path HOME=/tmp /bin/busybox chroot /host /bin/sh -c \
        'cd "$1" || exit 126; shift; exec "$@"' rdma-vm "$workdir" "$@" \
        >"/results/$n.out" 2>&1 </dev/null
    rc=$?
    echo "$rc $start $(uptime_s)" >"/results/$n.status"
    echo "rdma-vm: [$n] exit $rc"
}

. /results/job
echo ok >/results/done
umount /results
sync
poweroff -f
