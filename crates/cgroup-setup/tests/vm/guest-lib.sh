# Test fixture (busybox sh, runs in the guest VM): prints what the kernel shows so the Rust
# test can assert on it. Lines: `KIND TAG VALUE...`.
B=/usr/local/bin/cgroup-setup
CG=/sys/fs/cgroup

# state TAG: controllers, subtree_control from the root down to /kubelet, and the user
# processes (kernel threads have no exe) still in the root cgroup.
state() {
    echo "STATE $1 controllers $(cat $CG/cgroup.controllers)"
    echo "STATE $1 sc:/ $(cat $CG/cgroup.subtree_control)"
    echo "STATE $1 sc:/kubelet $(cat $CG/kubelet/cgroup.subtree_control 2>&1)"
    user=""
    for p in $(cat $CG/cgroup.procs); do
        [ -n "$(readlink /proc/$p/exe 2>/dev/null)" ] && user="$user $p"
    done
    echo "STATE $1 rootprocs$user"
    echo "STATE $1 leafprocs $(cat $CG/init.scope/cgroup.procs 2>/dev/null | wc -l)"
}

# run TAG: cgroup-setup with --json, then again for people (stdout and stderr kept apart).
run() {
    echo "TIME $1 $(cut -d' ' -f1 /proc/uptime)"
    $B --json > /tmp/$1.json
    echo "RC $1 $?"
    echo "JSON $1 $(cat /tmp/$1.json)"
}
human() {
    $B > /tmp/$1.out 2> /tmp/$1.err
    echo "RC $1 $?"
    while IFS= read -r l; do echo "OUT $1 $l"; done < /tmp/$1.out
    while IFS= read -r l; do echo "ERR $1 $l"; done < /tmp/$1.err
}
