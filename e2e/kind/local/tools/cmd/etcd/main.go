// etcd for the kind node image (e2e/kind/local): the etcd server release kubeadm of this
// Kubernetes version asks for (registry.k8s.io/etcd:<version>-0), from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
