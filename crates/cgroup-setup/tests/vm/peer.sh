# Benchmark peer (busybox sh): the same job done the way shell entrypoints of other
# "Kubernetes in a container" projects do it: move each pid of the root into a leaf,
# then enable everything listed in cgroup.controllers, here down to /kubelet as well.
CG=/sys/fs/cgroup
mkdir -p $CG/init.scope
for p in $(cat $CG/cgroup.procs); do echo $p > $CG/init.scope/cgroup.procs 2>/dev/null; done
for cg in "" /kubelet; do
    mkdir -p $CG$cg
    line=""
    for c in $(cat $CG$cg/cgroup.controllers); do line="$line +$c"; done
    echo $line > $CG$cg/cgroup.subtree_control
done
