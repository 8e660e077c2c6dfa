// kube-apiserver for the mesh harness: the real API server of k8s.io/kubernetes, built from
// the Go module proxy (no release binaries or container images are reachable here).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
