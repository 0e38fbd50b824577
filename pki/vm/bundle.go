package vm

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
)

// Files of a bundle directory. The first five are what Istio's
// "istioctl x workload entry configure" writes; on the VM Istio's guide
// puts them in /var/lib/istio/envoy/cluster.env, /etc/istio/config/mesh,
// /etc/certs/root-cert.pem, /var/run/secrets/tokens/istio-token and
// appends hosts to /etc/hosts.
const (
	FileClusterEnv = "cluster.env"
	FileMeshConfig = "mesh.yaml"
	FileRootCert   = "root-cert.pem"
	// FileIstioToken holds the same one-use secret as FileJoinToken, so an
	// Istio agent pointed at the meshgate CA (CA_ADDR) can spend it
	// instead: whichever spends it first gets the certificate.
	FileIstioToken = "istio-token"
	FileHosts      = "hosts"
	// FileJoinToken is the one-use CA token "meshgate workload join"
	// spends for the first certificate (mode 0600).
	FileJoinToken = "join-token"
	// FileEndpointsToken was the admin API token older bundles carried;
	// bundles no longer have it (the join registers with its workload
	// certificate) and a join ignores one left in an old bundle.
	FileEndpointsToken = "endpoints-token"
	// FileWorkloadEntry is a WorkloadEntry template for the VM.
	FileWorkloadEntry = "workload.yaml"
	// FileManifest names what the join needs (Spec as YAML).
	FileManifest = "meshgate.yaml"
)

// ManifestKind is the kind field of meshgate.yaml.
const ManifestKind = "WorkloadBundle"

// Port is one service port the VM serves: the workload group's port type,
// so a bundle's ports are bound to its identity as they are.
type Port = pki.GroupPort

// ParsePort reads "9080" or "9080:8080" (service port, then the VM's
// listening port).
func ParsePort(s string) (Port, error) {
	a, b, two := strings.Cut(s, ":")
	num := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%w: port %q: want 1-65535 or SERVICE_PORT:TARGET_PORT", ErrInvalid, s)
		}
		return uint32(n), nil
	}
	var p Port
	var err error
	if p.Port, err = num(a); err != nil {
		return Port{}, err
	}
	if two {
		if p.TargetPort, err = num(b); err != nil {
			return Port{}, err
		}
	}
	return p, nil
}

// Spec is what a bundle says about the workload and where its gateway is:
// the content of meshgate.yaml besides kind. Field names are Istio's
// camelCase.
type Spec struct {
	TrustDomain    string `json:"trustDomain"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// Network is the VM's network (ISTIO_META_NETWORK, the endpoint's
	// network in the catalog).
	Network string `json:"network"`
	// Service is the service host the VM's endpoints register under.
	// Default "<serviceAccount>.<namespace>.svc.cluster.local".
	Service string `json:"service"`
	// Ports are the service ports the VM serves; at least one.
	Ports []Port `json:"ports"`
	// Labels are the workload labels (subsets select on them).
	Labels map[string]string `json:"labels,omitempty"`
	// CAAddr is host:port of the certificate API as the VM reaches it.
	CAAddr string `json:"caAddr"`
	// CAServerName is checked against the CA's certificate; default the
	// host of CAAddr.
	CAServerName string `json:"caServerName,omitempty"`
	// AdminAddr is unused: registrations go to the certificate API
	// (CAAddr) with the workload certificate. Older manifests carry it;
	// it is read and ignored.
	AdminAddr string `json:"adminAddr,omitempty"`
	// ClusterID and MeshID go into Istio's metadata; defaults "meshgate"
	// and "" (Istio's own default mesh).
	ClusterID string `json:"clusterID,omitempty"`
	MeshID    string `json:"meshID,omitempty"`
	// JoinTokenID and JoinTokenExpires describe the join token (for
	// "meshgate token revoke" and for a clear error once it expired).
	JoinTokenID      string    `json:"joinTokenID,omitempty"`
	JoinTokenExpires time.Time `json:"joinTokenExpires,omitzero"`
	// EndpointsTokenID is unused (older bundles' admin token); read and
	// ignored.
	EndpointsTokenID string `json:"endpointsTokenID,omitempty"`
	// Created is when the bundle was made.
	Created time.Time `json:"created,omitzero"`
}

// Identity returns spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
func (s *Spec) Identity() (pki.Identity, error) {
	return pki.NewIdentity(s.TrustDomain, s.Namespace, s.ServiceAccount)
}

// withDefaults fills Service and ClusterID.
func (s Spec) withDefaults() Spec {
	if s.Service == "" {
		s.Service = s.ServiceAccount + "." + s.Namespace + ".svc.cluster.local"
	}
	if s.ClusterID == "" {
		s.ClusterID = "meshgate"
	}
	s.Service = strings.ToLower(s.Service)
	return s
}

// Validate checks every field a join uses; the error names the field.
func (s *Spec) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	if _, err := s.Identity(); err != nil {
		return bad("trustDomain/namespace/serviceAccount", "%v", err)
	}
	if !pki.PrintableName(s.Network, 63) {
		return bad("network", "%q must be 1-63 printable characters without spaces", s.Network)
	}
	if s.Service == "" || !pki.PrintableName(s.Service, 253) {
		return bad("service", "%q must be a service host of at most 253 characters", s.Service)
	}
	if len(s.Ports) == 0 {
		return bad("ports", "at least one port is needed")
	}
	for i, p := range s.Ports {
		if p.Port == 0 || p.Port > 65535 || p.TargetPort > 65535 {
			return bad(fmt.Sprintf("ports[%d]", i), "port %d:%d out of 1-65535", p.Port, p.TargetPort)
		}
	}
	if len(s.Labels) > 16 {
		return bad("labels", "%d labels, at most 16", len(s.Labels))
	}
	for k, v := range s.Labels {
		if !pki.PrintableName(k, 63) || (v != "" && !pki.PrintableName(v, 63)) {
			return bad("labels", "%q=%q: keys and values are at most 63 printable characters without spaces", k, v)
		}
	}
	for _, f := range []struct{ name, v string }{{"caAddr", s.CAAddr}} {
		host, port, err := net.SplitHostPort(f.v)
		if err != nil || host == "" || port == "" {
			return bad(f.name, "%q is not host:port", f.v)
		}
	}
	return nil
}

// ParseLabels reads "k=v,k2=v2" (the --labels flag).
func ParseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: label %q: want key=value", ErrInvalid, kv)
		}
		out[k] = v
	}
	return out, nil
}

// Bundle is a bundle directory's content.
type Bundle struct {
	Spec
	// Roots is the mesh trust bundle (root-cert.pem).
	Roots []*x509.Certificate
	// JoinToken is the one-use CA token; "" once removed from the bundle
	// (a join that has a certificate does not need it).
	JoinToken string
}

// RootPool returns Roots as a pool.
func (b *Bundle) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.Roots {
		p.AddCert(r)
	}
	return p
}

// manifest is meshgate.yaml.
type manifest struct {
	Kind string `json:"kind"`
	Spec `json:",inline"`
}

// WriteBundle writes b into dir: the files are written into a new
// directory beside dir (same parent, so the rename cannot cross file
// systems), synced, then renamed to dir, so dir is either absent or whole.
// An existing dir is refused unless replace is true; then it is replaced
// in one rename of the new directory over a moved-aside old one. Secrets
// are mode 0600 and the directory 0700.
func WriteBundle(dir string, b *Bundle, replace bool) error {
	spec := b.Spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return err
	}
	if len(b.Roots) == 0 {
		return fmt.Errorf("%w: no root certificates", ErrInvalid)
	}
	if b.JoinToken == "" {
		return fmt.Errorf("%w: the join token is required", ErrInvalid)
	}
	files, err := render(spec, b)
	if err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil && !replace {
		return fmt.Errorf("vm: %s already exists; pass --force to replace it (its join token may be spent already)", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-*")
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range files {
		if err := writeFile(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	var old string
	if _, err := os.Lstat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("vm: move aside %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return fmt.Errorf("vm: %w", err)
	}
	ok = true
	if old != "" {
		os.RemoveAll(old)
	}
	return syncDir(parent)
}

type file struct {
	name string
	data []byte
	mode os.FileMode
}

// render builds every file of a bundle.
func render(s Spec, b *Bundle) ([]file, error) {
	var roots bytes.Buffer
	for _, c := range b.Roots {
		_ = pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	man, err := yaml.Marshal(manifest{Kind: ManifestKind, Spec: s})
	if err != nil {
		return nil, fmt.Errorf("vm: %s: %w", FileManifest, err)
	}
	mesh, err := meshConfig(s)
	if err != nil {
		return nil, err
	}
	we, err := workloadEntry(s)
	if err != nil {
		return nil, err
	}
	header := []byte("# meshgate workload bundle: " + FileManifest + " is what \"meshgate workload join\" reads.\n")
	return []file{
		{FileManifest, append(header, man...), 0o644},
		{FileRootCert, roots.Bytes(), 0o644},
		{FileJoinToken, []byte(b.JoinToken + "\n"), 0o600},
		{FileIstioToken, []byte(b.JoinToken), 0o600},
		{FileClusterEnv, clusterEnv(s), 0o644},
		{FileMeshConfig, mesh, 0o644},
		{FileHosts, hosts(s), 0o644},
		{FileWorkloadEntry, we, 0o644},
	}, nil
}

// proxyMetadata is the metadata Istio puts in both cluster.env and
// mesh.yaml's defaultConfig.proxyMetadata.
func proxyMetadata(s Spec) map[string]string {
	labels, _ := json.Marshal(jsonLabels(s.Labels))
	var ports []map[string]any
	for _, p := range s.Ports {
		ports = append(ports, map[string]any{"containerPort": p.Target(), "protocol": "TCP"})
	}
	podPorts, _ := json.Marshal(ports)
	name := s.ServiceAccount
	if app := s.Labels["app"]; app != "" {
		name = app
	}
	return map[string]string{
		"CANONICAL_SERVICE":        name,
		"CANONICAL_REVISION":       orDefault(s.Labels["version"], "latest"),
		"ISTIO_META_CLUSTER_ID":    s.ClusterID,
		"ISTIO_META_MESH_ID":       s.MeshID,
		"ISTIO_META_NETWORK":       s.Network,
		"ISTIO_META_WORKLOAD_NAME": name,
		"ISTIO_METAJSON_LABELS":    string(labels),
		"ISTIO_META_POD_PORTS":     string(podPorts),
		"ISTIO_META_DNS_CAPTURE":   "true",
		"POD_NAMESPACE":            s.Namespace,
		"SERVICE_ACCOUNT":          s.ServiceAccount,
		"TRUST_DOMAIN":             s.TrustDomain,
	}
}

func jsonLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return l
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// clusterEnv renders cluster.env: KEY='value' lines in key order, values
// single-quoted for a shell.
func clusterEnv(s Spec) []byte {
	env := proxyMetadata(s)
	var inbound []string
	for _, p := range s.Ports {
		inbound = append(inbound, strconv.Itoa(int(p.Target())))
	}
	name := env["ISTIO_META_WORKLOAD_NAME"]
	maps.Copy(env, map[string]string{
		"ISTIO_INBOUND_PORTS":       strings.Join(inbound, ","),
		"ISTIO_NAMESPACE":           s.Namespace,
		"ISTIO_SERVICE":             name + "." + s.Namespace,
		"ISTIO_SERVICE_CIDR":        "*",
		"ISTIO_LOCAL_EXCLUDE_PORTS": "22,15090,15021,15020",
		"CA_ADDR":                   s.CAAddr,
		// After the first certificate the agent renews with it (mTLS),
		// from the files "meshgate workload join" keeps in /etc/certs.
		"PROV_CERT":    "/etc/certs",
		"OUTPUT_CERTS": "/etc/certs",
	})
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(env)) {
		b.WriteString(k + "=" + shellQuote(env[k]) + "\n")
	}
	return b.Bytes()
}

func shellQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }

// meshConfig renders mesh.yaml (Istio's /etc/istio/config/mesh).
func meshConfig(s Spec) ([]byte, error) {
	_, port, _ := net.SplitHostPort(s.CAAddr)
	cfg := map[string]any{
		"defaultConfig": map[string]any{
			"discoveryAddress": "istiod.istio-system.svc:" + port,
			"meshId":           s.MeshID,
			"proxyMetadata":    proxyMetadata(s),
		},
		"trustDomain": s.TrustDomain,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("vm: %s: %w", FileMeshConfig, err)
	}
	return b, nil
}

// hosts renders the /etc/hosts line that makes istiod's name reach the
// gateway's certificate API.
func hosts(s Spec) []byte {
	host, _, _ := net.SplitHostPort(s.CAAddr)
	if _, err := netip.ParseAddr(host); err != nil {
		return []byte("# " + host + " is a name: no hosts entry is needed for istiod.istio-system.svc if it resolves; else map it to the gateway's IP\n")
	}
	return []byte(host + " istiod.istio-system.svc\n")
}

// workloadEntry renders the WorkloadEntry template; address is left for
// the join to fill (it is the --advertise address).
func workloadEntry(s Spec) ([]byte, error) {
	ports := map[string]uint32{}
	for _, p := range s.Ports {
		ports["tcp-"+strconv.Itoa(int(p.Port))] = p.Target()
	}
	we := map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "WorkloadEntry",
		"metadata":   map[string]any{"name": s.ServiceAccount, "namespace": s.Namespace},
		"spec": map[string]any{
			"labels":         jsonLabels(s.Labels),
			"network":        s.Network,
			"serviceAccount": s.ServiceAccount,
			"ports":          ports,
		},
	}
	b, err := yaml.Marshal(we)
	if err != nil {
		return nil, fmt.Errorf("vm: %s: %w", FileWorkloadEntry, err)
	}
	return append([]byte("# WorkloadEntry template: add spec.address (the VM's advertised IP) before applying it.\n"), b...), nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("vm: write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("vm: sync %s: %w", dir, err)
	}
	return nil
}

// maxBundleFile bounds what LoadBundle reads of one file.
const maxBundleFile = 1 << 20

// LoadBundle reads a bundle directory. Errors wrap ErrBundle (or
// ErrInvalid for a field) and name the file. A missing join-token is not
// an error (the join needs it only without a certificate).
func LoadBundle(dir string) (*Bundle, error) {
	read := func(name string, required bool) ([]byte, error) {
		p := filepath.Join(dir, name)
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) && !required {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v (is %s a directory written by meshgate vm bundle?)", ErrBundle, err, dir)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxBundleFile+1))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBundle, p, err)
		}
		if len(data) > maxBundleFile {
			return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBundle, p, maxBundleFile)
		}
		return data, nil
	}
	raw, err := read(FileManifest, true)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, FileManifest), err)
	}
	b := &Bundle{Spec: m}
	rootPEM, err := read(FileRootCert, true)
	if err != nil {
		return nil, err
	}
	if b.Roots, err = client.ParseCerts(rootPEM); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, filepath.Join(dir, FileRootCert), err)
	}
	tok, err := read(FileJoinToken, false)
	if err != nil {
		return nil, err
	}
	b.JoinToken = strings.TrimSpace(string(tok))
	return b, nil
}

// ParseManifest decodes meshgate.yaml strictly (unknown fields refused)
// and validates it. Errors wrap ErrBundle or ErrInvalid and name the
// field.
func ParseManifest(data []byte) (Spec, error) {
	if len(data) > maxBundleFile {
		return Spec{}, fmt.Errorf("%w: larger than %d bytes", ErrBundle, maxBundleFile)
	}
	var m manifest
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return Spec{}, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if m.Kind != ManifestKind {
		return Spec{}, fmt.Errorf("%w: kind %q, want %s", ErrBundle, m.Kind, ManifestKind)
	}
	s := m.Spec.withDefaults()
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}
