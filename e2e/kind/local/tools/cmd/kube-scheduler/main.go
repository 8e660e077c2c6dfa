// kube-scheduler for the kind node image (e2e/kind/local): the real kube-scheduler of k8s.io/kubernetes at the
// version go.mod pins, built from the Go module proxy (no release binaries are reachable here).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
