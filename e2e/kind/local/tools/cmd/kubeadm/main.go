// kubeadm for the kind node image (e2e/kind/local): kind runs it inside the node to create the
// cluster. The real kubeadm of k8s.io/kubernetes at the version go.mod pins.
package main

import (
	"k8s.io/kubernetes/cmd/kubeadm/app"
	utilerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
)

func main() {
	utilerrors.HandleError(app.Run())
}
