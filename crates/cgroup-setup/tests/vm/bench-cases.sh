# Benchmark fixture (busybox sh): N fresh cgroup namespaces per variant, interleaved.
. /vm/lib
# The real root may enable controllers while it holds processes (it is exempt).
echo "+cpu +cpuset +io +memory +pids +hugetlb +misc +rdma" > $CG/cgroup.subtree_control
i=0
while [ $i -lt $N ]; do
    for v in ours peer; do
        d=$CG/b$i$v
        mkdir -p $d/ctr
        echo "+cpu +cpuset +io +memory +pids +hugetlb +misc +rdma" > $d/cgroup.subtree_control
        sh -c "echo \$\$ > $d/ctr/cgroup.procs && exec /usr/bin/unshare -C -m /bin/sh /vm/inner $v $i"
    done
    i=$((i + 1))
done
echo DONE
