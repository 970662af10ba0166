# Test fixture (busybox sh): runs as the root of a new cgroup + mount namespace.
. /vm/lib
# The inherited mount shows the tree from outside the namespace (root /../..); mounting
# the same superblock over it is EBUSY, so unmount it first (this mount namespace only).
umount $CG && mount -t cgroup2 cgroup2 $CG || echo "FAIL $1 remount"
echo "CGNS $1 $(cat /proc/self/cgroup)"
/bin/busybox sleep 600 &
sleeper=$!
run $1
human $1h
state $1
kill $sleeper
