# Benchmark fixture (busybox sh): one measured run pair in a fresh cgroup namespace.
# /proc/uptime is read with the `read` builtin (no fork) around each run.
. /vm/lib
umount $CG && mount -t cgroup2 cgroup2 $CG || echo "FAIL $1 remount"
/bin/busybox sleep 600 &
s1=$!
/bin/busybox sleep 600 &
s2=$!
# startup: process start alone (`--version` / `sh -c :`); nomount: cgroup-setup stopping at
# layout detection. They show how much of a run is starting the program under emulation.
read a _ < /proc/uptime
if [ "$1" = ours ]; then $B --version > /dev/null 2>&1; else /bin/sh -c : > /dev/null 2>&1; fi
read b _ < /proc/uptime
echo "T $1 startup $a $b"
read a _ < /proc/uptime
if [ "$1" = ours ]; then $B --cgroup-mount /nonexist > /dev/null 2>&1; else /bin/sh -c : > /dev/null 2>&1; fi
read b _ < /proc/uptime
echo "T $1 nomount $a $b"
for phase in first rerun; do
    read a _ < /proc/uptime
    if [ "$1" = ours ]; then $B > /dev/null 2>&1; else /bin/sh /vm/peer > /dev/null 2>&1; fi
    read b _ < /proc/uptime
    echo "T $1 $phase $a $b"
done
[ "$2" = 0 ] && state $1
kill $s1 $s2
