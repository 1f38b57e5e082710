#!/bin/busybox sh
# PID 1 of the test VM: attach the host's NBD export with the kernel client, put ext4 on it,
# write files, remount, verify checksums, fsck, and report one marker line on the console.
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

result() {
  echo "RAFTBLOCK-VM-RESULT: $*"
  sync
  poweroff -f
  sleep 30
}
step() {
  echo "rbvm: $*"
}
fail() {
  result "FAIL $*"
}

arg() {
  for kv in $(cat /proc/cmdline); do
    case "$kv" in "$1="*) echo "${kv#*=}"; return;; esac
  done
}
HOST=$(arg rbvm.host)
PORT=$(arg rbvm.port)
NAME=$(arg rbvm.name)
CONNS=$(arg rbvm.connections)
[ -n "$CONNS" ] || CONNS=1
FILES=$(arg rbvm.files)
[ -n "$FILES" ] || FILES=8

step "loading modules"
for m in $(cat /modules.list); do
  insmod "/modules/$m" || fail "insmod $m"
done

step "network"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr"
ip link set eth0 up || fail "ip link eth0"
ip route add default via 10.0.2.2 || fail "ip route"

step "nbd-client $HOST $PORT -N $NAME -C $CONNS"
i=0
until [ -b /dev/nbd0 ]; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "no /dev/nbd0"; sleep 0.1
done
nbd-client "$HOST" "$PORT" /dev/nbd0 -N "$NAME" -b 4096 -C "$CONNS" || fail "nbd-client"
SIZE=$(cat /sys/block/nbd0/size)
step "nbd0 has $SIZE sectors"
[ "$SIZE" -gt 0 ] || fail "nbd0 is empty"

step "mkfs.ext4"
mkfs.ext4 -F -q -E nodiscard /dev/nbd0 || fail "mkfs.ext4"
mount -t ext4 /dev/nbd0 /mnt || fail "mount"
mkdir -p /mnt/dir/sub || fail "mkdir"
n=0
while [ $n -lt "$FILES" ]; do
  dd if=/dev/urandom of=/mnt/dir/file$n bs=4k count=$((n * 37 + 5)) 2>/dev/null || fail "write file$n"
  n=$((n + 1))
done
dd if=/dev/urandom of=/mnt/dir/sub/big bs=1M count=4 2>/dev/null || fail "write big"
echo "hello from the kernel client" > /mnt/hello.txt
(cd /mnt && find . -type f | sort | xargs sha256sum) > /tmp/sums || fail "checksum"
sync
umount /mnt || fail "umount"
# Remount from the server's bytes, not from this kernel's caches.
blockdev --flushbufs /dev/nbd0
echo 3 > /proc/sys/vm/drop_caches

step "remount"
mount -t ext4 /dev/nbd0 /mnt || fail "remount"
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "checksums differ after remount"
rm /mnt/dir/file0 || fail "rm"
umount /mnt || fail "umount 2"
# Drop the page cache so that fsck reads through to the server.
echo 3 > /proc/sys/vm/drop_caches

step "e2fsck"
e2fsck -fn /dev/nbd0 || fail "e2fsck found problems"
nbd-client -d /dev/nbd0 || fail "nbd-client -d"
result "PASS files=$FILES"
