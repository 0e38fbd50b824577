package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxNodeFileBytes is the largest node.yaml accepted: 1 MiB.
const MaxNodeFileBytes = 1 << 20

// Node is one meshgate node's own settings, read from node.yaml (the mesh
// configuration, Istio's resources, is read separately by Load). Keys are
// snake_case. Unknown keys are errors that name the key.
//
// Start from DefaultNode and change what differs; Validate before use. A
// Node is a plain value: copy it freely, do not share one between
// goroutines while changing it.
type Node struct {
	// Name is this node's name, unique in the fleet; it names the node in
	// gossip, raft and logs. Default: the host name. At most 253 characters
	// of [A-Za-z0-9._-], starting alphanumeric.
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// Network is the network this node and the workloads behind it live in
	// (Istio's topology.istio.io/network). Default "default".
	Network string `json:"network,omitempty" yaml:"network,omitempty"`
	// ClusterID names the cluster (Istio's ISTIO_META_CLUSTER_ID) this node
	// serves. Optional; default "".
	ClusterID string `json:"cluster_id,omitempty" yaml:"cluster_id,omitempty"`
	// Labels are this node's labels; a Gateway applies to the node when its
	// spec.selector is a subset of them (e.g. istio: eastwestgateway).
	// Default none.
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// BindAddr is the IP address Gateway listeners bind to when a server
	// has no bind of its own. Default "" (all addresses). May be a
	// go-sockaddr template such as `{{ GetPrivateIP }}`.
	BindAddr string `json:"bind_addr,omitempty" yaml:"bind_addr,omitempty"`
	// AdminAddr is host:port of the admin endpoint (/healthz, /readyz,
	// /metrics, state dumps). Default "127.0.0.1:15000"; "" turns the admin
	// endpoint off.
	AdminAddr string `json:"admin_addr" yaml:"admin_addr"`
	// DataDir holds the raft log, snapshots and the node key. Default
	// "/var/lib/meshgate".
	DataDir string `json:"data_dir,omitempty" yaml:"data_dir,omitempty"`
	// Log sets the log format and level.
	Log NodeLog `json:"log" yaml:"log"`
	// DrainTimeout is how long SIGTERM waits for connections in flight
	// before closing them. Default 30s; 0 closes them at once.
	DrainTimeout Duration `json:"drain_timeout" yaml:"drain_timeout"`
	// HelloTimeout is how long a client has to send its TLS ClientHello.
	// Default 5s; must be more than 0 and at most 5m.
	HelloTimeout Duration `json:"hello_timeout" yaml:"hello_timeout"`
	// TrustDomain is the SPIFFE trust domain of workload identities
	// (spiffe://<trust_domain>/ns/<ns>/sa/<sa>). Default "cluster.local".
	TrustDomain string `json:"trust_domain,omitempty" yaml:"trust_domain,omitempty"`

	// GatewayAddr is "host:port" where nodes of other networks reach this
	// node's AUTO_PASSTHROUGH listener (Istio's 15443); gossiped so remote
	// networks send cross-network traffic here. Default "" (this node is
	// not a cross-network gateway). The host may be a go-sockaddr template.
	GatewayAddr string `json:"gateway_addr,omitempty" yaml:"gateway_addr,omitempty"`

	// Join lists gossip addresses ("host" or "host:port") of nodes to join
	// at start. Default none (a node on its own).
	Join []string `json:"join,omitempty" yaml:"join,omitempty"`
	// BootstrapExpect is the number of server nodes to wait for before the
	// first raft election. Default 0 (do not wait). Excludes Bootstrap.
	BootstrapExpect int `json:"bootstrap_expect,omitempty" yaml:"bootstrap_expect,omitempty"`
	// Bootstrap makes this node start a one-node raft cluster on its own.
	// Default false. Excludes BootstrapExpect.
	Bootstrap bool `json:"bootstrap,omitempty" yaml:"bootstrap,omitempty"`
	// Gossip configures endpoint gossip (memberlist).
	Gossip NodeGossip `json:"gossip" yaml:"gossip"`
	// Raft configures the replicated config store.
	Raft NodeRaft `json:"raft" yaml:"raft"`
	// CA configures the certificate API.
	CA NodeCA `json:"ca" yaml:"ca"`
	// TLS names this node's own certificate files (used for the bridge
	// tunnel, raft and admin). Default none: the node gets its identity
	// from the CA.
	TLS NodeTLS `json:"tls" yaml:"tls"`
	// Admin controls who may use the admin API (see README "Admin API
	// access").
	Admin NodeAdmin `json:"admin" yaml:"admin"`
	// Bridge configures the cross-network HBONE tunnel listener (15008).
	Bridge NodeBridge `json:"bridge" yaml:"bridge"`
	// Catalog holds the endpoint registration rules.
	Catalog NodeCatalog `json:"catalog" yaml:"catalog"`
}

// NodeAdmin is node.yaml's admin section.
type NodeAdmin struct {
	// AllowedHosts are extra Host header values (name or name:port) the
	// admin listener answers besides its own addresses; every other Host
	// is refused (DNS rebinding). Default none.
	AllowedHosts []string `json:"allowed_hosts,omitempty" yaml:"allowed_hosts,omitempty"`
	// OpenReads lets loopback clients read routes, endpoints, config,
	// members and metrics without a token. Default true; false makes every
	// read need a read-scope token.
	OpenReads bool `json:"open_reads" yaml:"open_reads"`
	// Pprof serves /debug/pprof/ (operator scope). Default false.
	Pprof bool `json:"pprof" yaml:"pprof"`
}

// NodeCatalog is node.yaml's catalog section.
type NodeCatalog struct {
	// AllowUndeclaredServices lets PUT /v1/endpoints register services no
	// ServiceEntry declares. Default false.
	AllowUndeclaredServices bool `json:"allow_undeclared_services" yaml:"allow_undeclared_services"`
}

// NodeLog sets logging.
type NodeLog struct {
	// Format is "text" (default) or "json", on stderr (under systemd the
	// journal keeps it).
	Format string `json:"format,omitempty" yaml:"format,omitempty"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `json:"level,omitempty" yaml:"level,omitempty"`
	// Access turns the access log (one Info line per connection) on or
	// off. Default true; false turns it off (the meshgate_sni_* metrics
	// still count every connection).
	Access bool `json:"access" yaml:"access"`
	// AccessSample logs one connection in AccessSample: the first, then
	// every AccessSample-th after it. Default 1 (every connection); at
	// most 1000000.
	AccessSample int `json:"access_sample,omitempty" yaml:"access_sample,omitempty"`
}

// MaxAccessSample is the largest NodeLog.AccessSample.
const MaxAccessSample = 1000000

// NodeGossip configures memberlist gossip.
type NodeGossip struct {
	// Bind is the IP address gossip listens on (TCP and UDP). Default ""
	// (all addresses). May be a go-sockaddr template.
	Bind string `json:"bind,omitempty" yaml:"bind,omitempty"`
	// Advertise is the IP address other nodes reach this one at. Default
	// "" (chosen from Bind). May be a go-sockaddr template.
	Advertise string `json:"advertise,omitempty" yaml:"advertise,omitempty"`
	// Port is the gossip port. Default 7946; 0 picks a free port.
	Port int `json:"port" yaml:"port"`
	// KeyringFile is a file of gossip encryption keys, one base64 key a
	// line, the primary first. Default "": the fleet's first node
	// (bootstrap: true) makes a key and nodes joining with a token fetch
	// it over mutual TLS (see Encrypt).
	KeyringFile string `json:"keyring_file,omitempty" yaml:"keyring_file,omitempty"`
	// Encrypt turns gossip encryption on (default true in a fleet). Without
	// KeyringFile the key is made by the bootstrap node, delivered to
	// token-joined nodes from the certificate API at tls.ca_addr, and kept
	// in data_dir/gossip.keyring (0600) across restarts. Nodes with
	// tls.cert_file and no KeyringFile have nobody to get a key from: they
	// gossip in the clear with a warning (meshgate_cluster_gossip_encrypted
	// 0); give them a KeyringFile. false turns encryption off; it must be
	// the same on every node of a fleet.
	Encrypt *bool `json:"encrypt,omitempty" yaml:"encrypt,omitempty"`
}

// EncryptGossip reports whether gossip encryption is wanted (Encrypt
// unset means yes).
func (g NodeGossip) EncryptGossip() bool { return g.Encrypt == nil || *g.Encrypt }

// NodeRaft configures raft.
type NodeRaft struct {
	// Bind is the IP address raft listens on. Default "" (all addresses).
	// May be a go-sockaddr template.
	Bind string `json:"bind,omitempty" yaml:"bind,omitempty"`
	// Advertise is the IP address other servers reach this one at.
	// Default "" (chosen from Bind). May be a go-sockaddr template.
	Advertise string `json:"advertise,omitempty" yaml:"advertise,omitempty"`
	// Port is the raft port. Default 8300; 0 picks a free port.
	Port int `json:"port" yaml:"port"`
}

// NodeCA configures the certificate API.
type NodeCA struct {
	// Addr is host:port the certificate API (gRPC and HTTP) listens on.
	// Default ":15012". An address without a host (the default) listens
	// on bind_addr's host when bind_addr is set, and on all addresses
	// otherwise (see CAListenAddr); write "0.0.0.0:15012" to listen on all
	// addresses whatever bind_addr says. "" turns the CA off on this node.
	Addr string `json:"addr" yaml:"addr"`
	// ServerNames are extra DNS names or IP addresses the certificate
	// API's server certificate carries, for clients that dial it by a name
	// or address the node cannot know (a NAT address, a load balancer, a
	// DNS name). The certificate always carries istiod.istio-system.svc,
	// localhost, loopback and the node's own listen and advertised
	// addresses (see CAServerNames). Default none; at most
	// MaxCAServerNames.
	ServerNames []string `json:"server_names,omitempty" yaml:"server_names,omitempty"`
}

// MaxCAServerNames is the most ca.server_names entries accepted.
const MaxCAServerNames = 64

// NodeBridge configures the cross-network bridge: an HBONE listener (TLS
// 1.3, ALPN h2, HTTP/2 CONNECT) that gateways of other networks open
// tunnels to, and the pool this node opens its own tunnels with.
type NodeBridge struct {
	// Addr is host:port the bridge listens on, e.g. ":15008" or
	// "{{ GetPrivateIP }}:15008". A host-less address listens on
	// bind_addr's host when set, else on all addresses. Default "": the
	// bridge is off, and connections to endpoints of other networks only
	// take Istio's split-horizon path (AUTO_PASSTHROUGH with a mesh ALPN).
	// The bridge needs a node identity (tls files or enrollment).
	Addr string `json:"addr,omitempty" yaml:"addr,omitempty"`
	// Advertise is host:port gossiped to other networks as this node's
	// bridge_addr. Default: Addr when its host is a specific address, else
	// gateway_addr's host with Addr's port.
	Advertise string `json:"advertise,omitempty" yaml:"advertise,omitempty"`
	// Namespace is the namespace whose view of the services (exportTo)
	// the bridge serves, as an Istio east-west gateway in istio-system
	// does. Default "istio-system".
	Namespace string `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	// MaxStreamsPerConn caps the tunnels this node opens on one connection
	// to a peer gateway before it opens another (default 100), and the
	// streams it accepts on one connection (10 times that).
	MaxStreamsPerConn int `json:"max_streams_per_conn,omitempty" yaml:"max_streams_per_conn,omitempty"`
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows in
	// bytes, per stream and per connection (defaults 4 MiB and 16 MiB;
	// HTTP/2's own 64 KiB caps a tunnel far below a LAN's bandwidth).
	StreamWindow int `json:"stream_window,omitempty" yaml:"stream_window,omitempty"`
	ConnWindow   int `json:"conn_window,omitempty" yaml:"conn_window,omitempty"`
}

// BridgeListenAddr is the address the bridge listens on: bridge.addr, or,
// when it has no host, bind (bind_addr's resolved host; "" for all) with
// its port. "" when the bridge is off.
func (n *Node) BridgeListenAddr(bind string) string {
	if n.Bridge.Addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(n.Bridge.Addr)
	if err != nil || host != "" || bind == "" {
		return n.Bridge.Addr
	}
	return net.JoinHostPort(bind, port)
}

// BridgeAdvertiseAddr is the bridge address gossiped to other networks,
// given the resolved listen address: bridge.advertise; else listen when
// its host is a specific address; else gateway_addr's host with listen's
// port. "" when none can be formed (or the bridge is off).
func (n *Node) BridgeAdvertiseAddr(listen string) string {
	if n.Bridge.Addr == "" {
		return ""
	}
	if n.Bridge.Advertise != "" {
		return n.Bridge.Advertise
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen
	}
	gh, _, err := net.SplitHostPort(n.GatewayAddr)
	if err != nil || gh == "" {
		return ""
	}
	return net.JoinHostPort(gh, port)
}

// CAListenAddr is the address the certificate API listens on: ca.addr,
// or, when ca.addr has no host, bind (bind_addr's host, with a go-sockaddr
// template already resolved; "" for all addresses) with ca.addr's port.
// It returns "" when the CA is off.
func (n *Node) CAListenAddr(bind string) string {
	if n.CA.Addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(n.CA.Addr)
	if err != nil || host != "" || bind == "" {
		return n.CA.Addr
	}
	return net.JoinHostPort(bind, port)
}

// NodeTLS names certificate files in PEM.
type NodeTLS struct {
	// CertFile is the certificate chain, leaf first. Needs KeyFile.
	CertFile string `json:"cert_file,omitempty" yaml:"cert_file,omitempty"`
	// KeyFile is the private key of CertFile. Needs CertFile.
	KeyFile string `json:"key_file,omitempty" yaml:"key_file,omitempty"`
	// CAFile is the bundle of roots peers' certificates must chain to.
	// With TokenFile it is the mesh root-cert.pem the CA at CAAddr must
	// chain to before the token is sent.
	CAFile string `json:"ca_file,omitempty" yaml:"ca_file,omitempty"`

	// Identity is this node's SPIFFE identity when its certificate comes
	// from the built-in CA. Default
	// spiffe://<trust_domain>/ns/meshgate-system/sa/meshgate.
	Identity string `json:"identity,omitempty" yaml:"identity,omitempty"`
	// PeerIdentities are the SPIFFE identities allowed to talk raft to
	// this node. Default: Identity only.
	PeerIdentities []string `json:"peer_identities,omitempty" yaml:"peer_identities,omitempty"`
	// TokenFile holds a join token for Identity (meshgate token create).
	// A node without a valid certificate in data_dir/node uses it once to
	// get one from the CA at CAAddr. Needs CAAddr and CAFile.
	TokenFile string `json:"token_file,omitempty" yaml:"token_file,omitempty"`
	// CAAddr is a certificate API (host:port) to enroll with the token
	// and to renew at when this node runs no CA itself.
	CAAddr string `json:"ca_addr,omitempty" yaml:"ca_addr,omitempty"`
}

// Duration is a time.Duration written in YAML as a Go duration string
// ("30s", "1m30s", "250ms"). Use .Duration for the value.
type Duration struct{ time.Duration }

// UnmarshalJSON reads a duration string; null leaves d unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("config: a duration must be a string such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("config: %q is not a duration such as \"30s\" or \"1m30s\"", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// DefaultNode returns the defaults of every Node field (see each field).
// Name is the host name, or "meshgate" when it cannot be read.
func DefaultNode() *Node {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "meshgate"
	}
	return &Node{
		Name:         name,
		Network:      "default",
		AdminAddr:    "127.0.0.1:15000",
		DataDir:      "/var/lib/meshgate",
		Log:          NodeLog{Format: "text", Level: "info", Access: true, AccessSample: 1},
		DrainTimeout: Duration{30 * time.Second},
		HelloTimeout: Duration{5 * time.Second},
		TrustDomain:  "cluster.local",
		Gossip:       NodeGossip{Port: 7946},
		Raft:         NodeRaft{Port: 8300},
		CA:           NodeCA{Addr: ":15012"},
		Admin:        NodeAdmin{OpenReads: true},
	}
}

// LoadNode reads and validates the node settings file at path (fields not
// in the file keep their defaults).
func LoadNode(path string) (*Node, error) {
	data, ferr := readFile(path, MaxNodeFileBytes)
	if ferr != nil {
		return nil, Errors{ferr}
	}
	return ParseNode(path, data)
}

// ParseNode reads node settings from the YAML in data, over the defaults
// of DefaultNode, and validates them. file only labels errors. Every
// problem is reported (an Errors value whose entries have File and Field
// set); on any problem the Node is nil.
func ParseNode(file string, data []byte) (*Node, error) {
	var errs Errors
	c := &collector{at: where{file: file}, errs: &errs}
	n := DefaultNode()
	if len(data) > MaxNodeFileBytes {
		c.add(ErrTooLarge, "", "file is larger than %d bytes, the limit", MaxNodeFileBytes)
		return nil, errs
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		c.add(ErrSyntax, "", "not valid UTF-8 text")
		return nil, errs
	}
	chunks := splitDocuments(data, MaxDocuments)
	var doc *chunk
	for i := range chunks {
		if !hasContent(chunks[i].body) {
			continue
		}
		if doc != nil {
			c.add(ErrSyntax, "", "node settings must be one YAML document; found another at line %d", chunks[i].line)
			return nil, errs
		}
		doc = &chunks[i]
	}
	if doc != nil {
		budget := int64(4 * MaxNodeFileBytes)
		v, ok, err := toJSONTree(*doc, &budget)
		switch {
		case err != nil && errors.Is(err, ErrTooLarge):
			c.add(ErrTooLarge, "", "%v", strings.TrimPrefix(err.Error(), ErrTooLarge.Error()+": "))
			return nil, errs
		case err != nil && isYAMLLimit(err):
			c.add(ErrTooLarge, "", "%s", yamlMessage(err, *doc))
			return nil, errs
		case err != nil:
			c.add(ErrSyntax, "", "%s", yamlMessage(err, *doc))
			return nil, errs
		}
		if ok {
			obj, isMap := v.(map[string]any)
			if !isMap {
				c.invalid("", "node settings must be a map of settings, got %s", describe(v))
				return nil, errs
			}
			checkStruct(c, "", obj, reflect.TypeFor[Node]())
			if len(errs) > 0 {
				return nil, errs
			}
			js, err := json.Marshal(obj)
			if err == nil {
				err = json.Unmarshal(js, n)
			}
			if err != nil {
				c.invalid("", "%v", err)
				return nil, errs
			}
		}
	}
	if err := n.Validate(); err != nil {
		if ve, ok := err.(Errors); ok {
			for _, e := range ve {
				e.File = file
			}
		}
		return nil, err
	}
	return n, nil
}

// durationType is the reflect type of Duration.
var durationType = reflect.TypeFor[Duration]()

// checkStruct checks a decoded YAML map against struct type t by its json
// tags: unknown keys and values of the wrong type are reported with their
// path ("gossip.port").
func checkStruct(c *collector, path string, obj map[string]any, t reflect.Type) {
	fields := map[string]reflect.StructField{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f
		names = append(names, name)
	}
	for _, k := range sortedKeys(obj) {
		p := k
		if path != "" {
			p = path + "." + k
		}
		f, ok := fields[k]
		if !ok {
			hint := ""
			for _, n := range names {
				if strings.EqualFold(strings.ReplaceAll(n, "_", ""), strings.ReplaceAll(strings.ReplaceAll(k, "_", ""), "-", "")) {
					hint = fmt.Sprintf(" (did you mean %q?)", n)
				}
			}
			c.invalid(p, "unknown field %q%s", k, hint)
			continue
		}
		checkGoValue(c, p, obj[k], f.Type)
	}
}

func checkGoValue(c *collector, p string, v any, t reflect.Type) {
	if v == nil {
		return // null keeps the default
	}
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			c.invalid(p, "expected a duration such as \"30s\", got %s", describe(v))
			return
		}
		if _, err := time.ParseDuration(s); err != nil {
			c.invalid(p, "%q is not a duration such as \"30s\" or \"1m30s\"", s)
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.invalid(p, "expected a string, got %s%s", describe(v), quoteHint(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.invalid(p, "expected true or false, got %s", describe(v))
		}
	case reflect.Int:
		num, ok := v.(json.Number)
		if !ok {
			c.invalid(p, "expected an integer, got %s", describe(v))
			return
		}
		if n, err := strconv.ParseInt(string(num), 10, 64); err != nil || n < math.MinInt32 || n > math.MaxInt32 {
			c.invalid(p, "%s is not an integer in range", num)
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			c.invalid(p, "expected a list, got %s", describe(v))
			return
		}
		for i, e := range list {
			if e == nil {
				c.invalid(fieldIndex(p, i), "list items must not be null")
				continue
			}
			checkGoValue(c, fieldIndex(p, i), e, t.Elem())
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			c.invalid(p, "expected a map, got %s", describe(v))
			return
		}
		for _, k := range sortedKeys(m) {
			if m[k] == nil {
				c.invalid(mapField(p, k), "map values must not be null")
				continue
			}
			checkGoValue(c, mapField(p, k), m[k], t.Elem())
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.invalid(p, "expected a map, got %s", describe(v))
			return
		}
		checkStruct(c, p, m, t)
	}
}

// Validate checks every field and returns an Errors value naming each bad
// field (Field is the node.yaml key path, e.g. "gossip.port"), or nil.
func (n *Node) Validate() error {
	var errs Errors
	c := &collector{errs: &errs}
	switch {
	case n.Name == "":
		c.invalid("name", "name is required")
	case !isNodeName(n.Name):
		c.invalid("name", "name %q must be at most 253 characters of [A-Za-z0-9._-], starting alphanumeric", n.Name)
	}
	switch {
	case n.Network == "":
		c.invalid("network", "network is required")
	case !isLabelValue(n.Network):
		c.invalid("network", "network %q must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric", n.Network)
	}
	if n.ClusterID != "" && !isLabelValue(n.ClusterID) {
		c.invalid("cluster_id", "cluster_id %q must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric", n.ClusterID)
	}
	checkLabels(c, "labels", n.Labels)
	checkBindIP(c, "bind_addr", n.BindAddr)
	if n.AdminAddr != "" {
		checkListenAddr(c, "admin_addr", n.AdminAddr)
	}
	if n.DataDir == "" {
		c.invalid("data_dir", "data_dir is required")
	}
	switch n.Log.Format {
	case "text", "json":
	default:
		c.invalid("log.format", "log format %q must be text or json", n.Log.Format)
	}
	if n.Log.AccessSample < 1 || n.Log.AccessSample > MaxAccessSample {
		c.invalid("log.access_sample", "log access_sample %d must be in 1..%d (one connection logged in that many)", n.Log.AccessSample, MaxAccessSample)
	}
	switch n.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		c.invalid("log.level", "log level %q must be debug, info, warn or error", n.Log.Level)
	}
	if n.DrainTimeout.Duration < 0 {
		c.invalid("drain_timeout", "drain_timeout %v must not be negative", n.DrainTimeout.Duration)
	}
	if d := n.HelloTimeout.Duration; d <= 0 || d > 5*time.Minute {
		c.invalid("hello_timeout", "hello_timeout %v must be more than 0 and at most 5m", d)
	}
	if !isTrustDomain(n.TrustDomain) {
		c.invalid("trust_domain", "trust_domain %q must be 1 to 255 characters of [a-z0-9._-]", n.TrustDomain)
	}
	for i, j := range n.Join {
		if msg := checkJoinAddr(j); msg != "" {
			c.invalid(fieldIndex("join", i), "%s", msg)
		}
	}
	if n.BootstrapExpect < 0 {
		c.invalid("bootstrap_expect", "bootstrap_expect %d must not be negative", n.BootstrapExpect)
	}
	if n.Bootstrap && n.BootstrapExpect > 0 {
		c.invalid("bootstrap_expect", "bootstrap and bootstrap_expect exclude each other; set one")
	}
	checkBindIP(c, "gossip.bind", n.Gossip.Bind)
	checkBindIP(c, "gossip.advertise", n.Gossip.Advertise)
	checkPort(c, "gossip.port", n.Gossip.Port)
	checkBindIP(c, "raft.bind", n.Raft.Bind)
	checkBindIP(c, "raft.advertise", n.Raft.Advertise)
	checkPort(c, "raft.port", n.Raft.Port)
	if n.Raft.Port != 0 && n.Raft.Port == n.Gossip.Port {
		c.invalid("raft.port", "raft.port %d must differ from gossip.port", n.Raft.Port)
	}
	if n.CA.Addr != "" {
		checkListenAddr(c, "ca.addr", n.CA.Addr)
	}
	if len(n.CA.ServerNames) > MaxCAServerNames {
		c.invalid("ca.server_names", "%d ca.server_names, at most %d", len(n.CA.ServerNames), MaxCAServerNames)
	}
	for i, h := range n.CA.ServerNames {
		if msg := checkServerName(h); msg != "" {
			c.invalid(fieldIndex("ca.server_names", i), "ca.server_names entry %q %s", h, msg)
		}
	}
	if n.Bridge.Addr != "" {
		checkListenAddr(c, "bridge.addr", n.Bridge.Addr)
		if n.Bridge.Advertise != "" {
			checkListenAddr(c, "bridge.advertise", n.Bridge.Advertise)
		} else if host, _, err := net.SplitHostPort(n.Bridge.Addr); err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) && n.GatewayAddr == "" && !isTemplate(n.Bridge.Addr) {
			c.invalid("bridge.advertise", "bridge.addr %q names no specific host: set bridge.advertise (or gateway_addr) so other networks know where to reach the bridge", n.Bridge.Addr)
		}
	} else if n.Bridge.Advertise != "" {
		c.invalid("bridge.advertise", "bridge.advertise needs bridge.addr (the bridge is off)")
	}
	if n.Bridge.Namespace != "" && !isLabelValue(n.Bridge.Namespace) {
		c.invalid("bridge.namespace", "bridge.namespace %q must be a namespace name", n.Bridge.Namespace)
	}
	if v := n.Bridge.MaxStreamsPerConn; v < 0 || v > 10000 {
		c.invalid("bridge.max_streams_per_conn", "bridge.max_streams_per_conn %d must be 0 (default 100) to 10000", v)
	}
	if v := n.Bridge.StreamWindow; v != 0 && (v < 65535 || v > 1<<30) {
		c.invalid("bridge.stream_window", "bridge.stream_window %d must be 0 (default 4 MiB) or 65535 to 1073741824 bytes", v)
	}
	if v := n.Bridge.ConnWindow; v != 0 && (v < 65535 || v > 1<<30) {
		c.invalid("bridge.conn_window", "bridge.conn_window %d must be 0 (default 16 MiB) or 65535 to 1073741824 bytes", v)
	}
	if n.TLS.TokenFile != "" {
		if n.TLS.CAAddr == "" {
			c.invalid("tls.ca_addr", "tls.token_file needs tls.ca_addr (the certificate API to enroll with)")
		}
		if n.TLS.CAFile == "" {
			c.invalid("tls.ca_file", "tls.token_file needs tls.ca_file (the mesh root-cert.pem)")
		}
		if n.TLS.CertFile != "" {
			c.invalid("tls.token_file", "tls.token_file and tls.cert_file exclude each other")
		}
	}
	if n.TLS.CAAddr != "" {
		if _, _, err := net.SplitHostPort(n.TLS.CAAddr); err != nil {
			c.invalid("tls.ca_addr", "tls.ca_addr %q is not host:port", n.TLS.CAAddr)
		}
	}
	for i, h := range n.Admin.AllowedHosts {
		if msg := checkAllowedHost(h); msg != "" {
			c.invalid(fieldIndex("admin.allowed_hosts", i), "admin.allowed_hosts entry %q %s", h, msg)
		}
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		if n.TLS.CertFile == "" {
			c.invalid("tls.cert_file", "tls.key_file needs tls.cert_file")
		} else {
			c.invalid("tls.key_file", "tls.cert_file needs tls.key_file")
		}
	}
	return errs.errOrNil()
}

func isNodeName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if !alnum && (i == 0 || ch != '.' && ch != '_' && ch != '-') {
			return false
		}
	}
	return true
}

func isTrustDomain(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

// isTemplate reports whether s is a go-sockaddr template; the agent
// resolves it against the host's interfaces at start.
func isTemplate(s string) bool {
	i := strings.Index(s, "{{")
	return i >= 0 && strings.Contains(s[i:], "}}")
}

func checkBindIP(c *collector, field, s string) {
	if s == "" || isTemplate(s) {
		return
	}
	if _, ok := parseIP(s); !ok {
		c.invalid(field, "%q must be an IP address or a go-sockaddr template", s)
	}
}

func checkPort(c *collector, field string, p int) {
	if p < 0 || p > 65535 {
		c.invalid(field, "port %d must be in 0..65535", p)
	}
}

func checkListenAddr(c *collector, field, s string) {
	if isTemplate(s) {
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		c.invalid(field, "%q must be host:port (e.g. 127.0.0.1:15000 or :15000)", s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.invalid(field, "%q: port %q must be a number in 0..65535", s, port)
	}
	if host != "" && host != "localhost" {
		if _, ok := parseIP(host); !ok {
			c.invalid(field, "%q: host %q must be an IP address, localhost or empty (all addresses)", s, host)
		}
	}
}

func checkJoinAddr(s string) string {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		host = h
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("%q: port %q must be a number in 1..65535", s, port)
		}
	}
	if host == "" {
		return fmt.Sprintf("%q: host must not be empty", s)
	}
	if _, ok := parseIP(host); ok {
		return ""
	}
	if err := checkHost(strings.ToLower(host), false, false); err != nil {
		return fmt.Sprintf("%q is neither host, host:port nor IP:port", s)
	}
	return ""
}

// checkAllowedHost says what is wrong with an admin.allowed_hosts entry
// (a host name or IP, optionally with :port), or "".
func checkAllowedHost(h string) string {
	if h == "" {
		return "is empty"
	}
	if len(h) > 261 || strings.ContainsAny(h, "/ \t\r\n@?#*") {
		return "must be a host name or IP, optionally with :port (no scheme, path or wildcard)"
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "has a port that is not 1 to 65535"
		}
		host = hh
	}
	if host == "" {
		return "has no host"
	}
	return ""
}
