// Command kube is every Kubernetes program of the kinc node in one binary: the node runs
// kubelet, kubeadm and kubectl, and the four control-plane images run kube-apiserver,
// kube-controller-manager, kube-scheduler and kube-proxy. One binary instead of seven is
// one shared copy of client-go, the API types and the apiserver libraries: the node image
// and the component images it preloads carry it once, so a slow host loads and imports
// far fewer bytes.
//
// It runs the program its file name names (kubelet -> kube), or the one named by its
// first argument (kube kubelet --version).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones, as the apiserver and controller manager upstream

	"github.com/spf13/cobra"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmutil "k8s.io/kubernetes/cmd/kubeadm/app/util"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// Each program's main, as upstream's cmd/<name>/main.go runs it.
var programs = map[string]func() int{
	"kube-apiserver":          func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"kube-scheduler":          func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kube-proxy":              func() int { return cli.Run(proxy.NewProxyCommand()) },
	"kubelet":                 func() int { return cli.Run(kubelet.NewKubeletCommand()) },
	"kubeadm": func() int {
		kubeadmutil.CheckErr(kubeadm.Run())
		return 0
	},
	"kubectl": func() int {
		var cmd *cobra.Command = kubectl.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(cmd); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	},
}

func names() []string {
	var n []string
	for k := range programs {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func main() {
	run, ok := programs[filepath.Base(os.Args[0])]
	if !ok && len(os.Args) > 1 {
		// kube NAME ARGS...: NAME sees itself as argv[0].
		if run, ok = programs[os.Args[1]]; ok {
			os.Args = os.Args[1:]
		}
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: kube PROGRAM [ARGS...], or run it as PROGRAM (a link to kube)\nprograms: %v\n", names())
		os.Exit(2)
	}
	os.Exit(run())
}
