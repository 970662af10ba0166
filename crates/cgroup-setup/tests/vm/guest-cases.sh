# Test fixture (busybox sh): the cases, in one boot. /vm/lib is guest-lib.sh.
. /vm/lib
echo "KERNEL - $(awk 'NR > 1 && $4 == 1 { printf "%s ", $1 }' /proc/cgroups)"

# 1. The real root, as a fresh machine has it: PID 1, this shell, sleepers and a process
#    that keeps forking while cgroup-setup works.
/bin/busybox sleep 600 &
/bin/busybox sleep 600 &
( while :; do /bin/busybox sleep 0.02; done ) &
spawner=$!
run root1
kill $spawner
state root1
# 2. Same boot, again: nothing to change.
run root2
human root2h
state root2

# 3./4. A cgroup namespace below a subtree whose parent delegates some controllers
#    (withheld: io and hugetlb missing) or all of them (ns), as in a rootless container.
nscase() {
    mkdir -p $CG/$2/ctr
    echo "$3" > $CG/$2/cgroup.subtree_control
    echo "DELEG $1 $(cat $CG/$2/cgroup.subtree_control)"
    sh -c "echo \$\$ > $CG/$2/ctr/cgroup.procs && exec /usr/bin/unshare -C -m /bin/sh /vm/inner $1"
    echo "RC $1-outer $?"
}
nscase withheld partial "+cpu +cpuset +memory +pids +misc +rdma"
nscase ns deleg "+cpu +cpuset +io +memory +pids +hugetlb +misc +rdma"
echo DONE
