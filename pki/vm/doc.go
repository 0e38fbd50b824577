// Package vm onboards a workload VM into the mesh, the way Istio's
// "istioctl x workload entry configure" and VM sidecar do, in two steps:
//
//   - on a gateway node, Make mints a one-use join token (the CA's token
//     API, scoped to one namespace and service account) and binds the
//     identity's workload group on the CA (what its certificate may
//     register: service, ports, network, labels, subsets), and
//     WriteBundle writes the token with Istio's VM files (cluster.env,
//     mesh.yaml, root-cert.pem, istio-token, hosts), a WorkloadEntry
//     template (workload.yaml) and the manifest the join reads
//     (meshgate.yaml) into one directory, atomically;
//
//   - on the VM, Join reads that directory, gets the workload certificate
//     (from the certificate already in the cert dir when it is valid, else
//     by spending the join token), writes Istio's certificate files
//     (cert-chain.pem, key.pem, root-cert.pem; /etc/certs by default) and
//     registers the VM's endpoints at the gateway's certificate API with
//     its workload certificate (mTLS, no bearer secret) with a TCP or
//     HTTP health check; Workload.Run renews the certificate with itself
//     before it expires, refreshes the registrations' lease and withdraws
//     them when it stops.
//
// After the first certificate the join token is never needed again: a VM
// that reboots, or whose token expired, keeps its identity from the
// certificate it has (Istio #49202, #35343). The advertised address is a
// go-sockaddr template resolved on the VM, never guessed (Istio #39519).
package vm
