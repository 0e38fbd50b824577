package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultNode(t *testing.T) {
	n := DefaultNode()
	if err := n.Validate(); err != nil {
		t.Fatalf("DefaultNode().Validate() = %v, want nil", err)
	}
	host, _ := os.Hostname()
	if host != "" && n.Name != host {
		t.Errorf("DefaultNode().Name = %q, want the host name %q", n.Name, host)
	}
	want := Node{
		Name: n.Name, Network: "default", AdminAddr: "127.0.0.1:15000", DataDir: "/var/lib/meshgate",
		Log: NodeLog{Format: "text", Level: "info", Access: true, AccessSample: 1}, DrainTimeout: Duration{30 * time.Second}, HelloTimeout: Duration{5 * time.Second},
		TrustDomain: "cluster.local", Gossip: NodeGossip{Port: 7946}, Raft: NodeRaft{Port: 8300}, CA: NodeCA{Addr: ":15012"}, Admin: NodeAdmin{OpenReads: true},
	}
	if !reflect.DeepEqual(*n, want) {
		t.Errorf("DefaultNode() = %+v\nwant %+v", *n, want)
	}
}

func TestLoadNodeFull(t *testing.T) {
	n, err := LoadNode("testdata/node/full.yaml")
	if err != nil {
		t.Fatalf("LoadNode(full.yaml) error:\n%v", err)
	}
	want := Node{
		Name: "gw-a-1", Network: "network-a", ClusterID: "cluster-a",
		Labels:    map[string]string{"istio": "eastwestgateway", "topology.istio.io/network": "network-a"},
		BindAddr:  "10.0.0.5",
		AdminAddr: "127.0.0.1:15001", DataDir: "/var/lib/meshgate-a",
		Log:          NodeLog{Format: "json", Level: "debug", Access: false, AccessSample: 10},
		DrainTimeout: Duration{90 * time.Second}, HelloTimeout: Duration{2 * time.Second},
		TrustDomain: "example.org",
		Join:        []string{"10.0.0.6", "10.0.0.7:7946", "gw-b-1.example.com"}, BootstrapExpect: 3,
		Gossip: NodeGossip{Bind: "{{ GetPrivateIP }}", Advertise: "10.0.0.5", Port: 7947, KeyringFile: "/etc/meshgate/keyring.json"},
		Raft:   NodeRaft{Bind: "0.0.0.0", Advertise: "10.0.0.5", Port: 8301},
		CA:     NodeCA{Addr: ":15013", ServerNames: []string{"ca.example.com", "*.ca.example.org", "203.0.113.7", "2001:db8::7"}},
		Admin:  NodeAdmin{OpenReads: true},
		TLS:    NodeTLS{CertFile: "/etc/meshgate/node.pem", KeyFile: "/etc/meshgate/node-key.pem", CAFile: "/etc/meshgate/root.pem"},
	}
	if !reflect.DeepEqual(*n, want) {
		t.Errorf("LoadNode(full.yaml) = %+v\nwant %+v", *n, want)
	}
}

func TestLoadNodeKeepsDefaults(t *testing.T) {
	n, err := LoadNode("testdata/node/minimal.yaml")
	if err != nil {
		t.Fatalf("LoadNode(minimal.yaml) error = %v", err)
	}
	d := DefaultNode()
	d.Name, d.Network = "gw-b-1", "network-b"
	if !reflect.DeepEqual(n, d) {
		t.Errorf("LoadNode(minimal.yaml) = %+v\nwant defaults with name and network set: %+v", *n, *d)
	}
	if _, err := LoadNode("testdata/node/deploy-example.yaml"); err != nil {
		t.Errorf("LoadNode(deploy example) error = %v", err)
	}
	for _, empty := range []string{"", "# only a comment\n", "---\n", "null\n", "gossip: null\n"} {
		n, err := ParseNode("node.yaml", []byte(empty))
		if err != nil || n.Gossip.Port != 7946 || n.DrainTimeout.Duration != 30*time.Second {
			t.Errorf("ParseNode(%q) = %+v, %v; want the defaults", empty, n, err)
		}
	}
	_, err = LoadNode(filepath.Join(t.TempDir(), "none.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadNode(missing) error = %v, want fs.ErrNotExist", err)
	}
}

// hostileNodeCases are shared by TestParseNodeHostile and FuzzParseNode.
func hostileNodeCases() []hostileCase {
	return []hostileCase{
		{"unknown field", "nmae: a\n", "nmae", ErrInvalid},
		{"unknown nested field", "gossip:\n  prot: 7946\n", "gossip.prot", ErrInvalid},
		{"camelCase key", "adminAddr: 127.0.0.1:1\n", "adminAddr", ErrInvalid},
		{"port eighty", "gossip: {port: eighty}\n", "gossip.port", ErrInvalid},
		{"port fractional", "raft: {port: 1.5}\n", "raft.port", ErrInvalid},
		{"port huge", "raft: {port: 99999999999999}\n", "raft.port", ErrInvalid},
		{"port out of range", "raft: {port: 70000}\n", "raft.port", ErrInvalid},
		{"negative port", "gossip: {port: -1}\n", "gossip.port", ErrInvalid},
		{"same raft and gossip port", "gossip: {port: 9000}\nraft: {port: 9000}\n", "raft.port", ErrInvalid},
		{"name a number", "name: 12\n", "name", ErrInvalid},
		{"name with spaces", "name: 'gw a'\n", "name", ErrInvalid},
		{"empty name", "name: ''\n", "name", ErrInvalid},
		{"network a boolean", "network: yes\n", "network", ErrInvalid},
		{"bad network", "network: 'net a'\n", "network", ErrInvalid},
		{"bad cluster id", "cluster_id: '-c'\n", "cluster_id", ErrInvalid},
		{"labels a list", "labels: [a]\n", "labels", ErrInvalid},
		{"label value a number", "labels: {a: 1}\n", "labels.a", ErrInvalid},
		{"bad label key", "labels: {'a b': c}\n", `labels["a b"]`, ErrInvalid},
		{"bind_addr not IP", "bind_addr: eth0\n", "bind_addr", ErrInvalid},
		{"admin addr without port", "admin_addr: 127.0.0.1\n", "admin_addr", ErrInvalid},
		{"admin addr bad port", "admin_addr: 127.0.0.1:http\n", "admin_addr", ErrInvalid},
		{"admin addr host name", "admin_addr: example.com:15000\n", "admin_addr", ErrInvalid},
		{"empty data dir", "data_dir: ''\n", "data_dir", ErrInvalid},
		{"bad log format", "log: {format: xml}\n", "log.format", ErrInvalid},
		{"bad log level", "log: {level: verbose}\n", "log.level", ErrInvalid},
		{"log format journal", "log: {format: journal}\n", "log.format", ErrInvalid},
		{"access a string", "log: {access: 'no'}\n", "log.access", ErrInvalid},
		{"zero access sample", "log: {access_sample: 0}\n", "log.access_sample", ErrInvalid},
		{"negative access sample", "log: {access_sample: -5}\n", "log.access_sample", ErrInvalid},
		{"huge access sample", "log: {access_sample: 1000001}\n", "log.access_sample", ErrInvalid},
		{"fractional access sample", "log: {access_sample: 0.5}\n", "log.access_sample", ErrInvalid},
		{"log a string", "log: debug\n", "log", ErrInvalid},
		{"duration without unit", "drain_timeout: 30\n", "drain_timeout", ErrInvalid},
		{"duration garbage", "drain_timeout: soon\n", "drain_timeout", ErrInvalid},
		{"negative drain", "drain_timeout: -1s\n", "drain_timeout", ErrInvalid},
		{"zero hello timeout", "hello_timeout: 0s\n", "hello_timeout", ErrInvalid},
		{"huge hello timeout", "hello_timeout: 1h\n", "hello_timeout", ErrInvalid},
		{"bad trust domain", "trust_domain: Cluster.Local\n", "trust_domain", ErrInvalid},
		{"join a string", "join: 10.0.0.1\n", "join", ErrInvalid},
		{"join null item", "join: [null]\n", "join[0]", ErrInvalid},
		{"join bad port", "join: ['10.0.0.1:0']\n", "join[0]", ErrInvalid},
		{"join garbage", "join: ['not a host']\n", "join[0]", ErrInvalid},
		{"negative bootstrap_expect", "bootstrap_expect: -1\n", "bootstrap_expect", ErrInvalid},
		{"bootstrap and expect", "bootstrap: true\nbootstrap_expect: 3\n", "bootstrap_expect", ErrInvalid},
		{"bootstrap a string", "bootstrap: 'true'\n", "bootstrap", ErrInvalid},
		{"bad gossip advertise", "gossip: {advertise: nope}\n", "gossip.advertise", ErrInvalid},
		{"bad raft bind", "raft: {bind: 300.1.1.1}\n", "raft.bind", ErrInvalid},
		{"bad ca addr", "ca: {addr: '15012'}\n", "ca.addr", ErrInvalid},
		{"ca server names a string", "ca: {server_names: ca.example.com}\n", "ca.server_names", ErrInvalid},
		{"ca server name empty", "ca: {server_names: ['']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name with a port", "ca: {server_names: [ok.example, 'ca.example.com:15012']}\n", "ca.server_names[1]", ErrInvalid},
		{"ca server name uppercase", "ca: {server_names: [CA.Example.com]}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name with a space", "ca: {server_names: ['ca example']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name a URL", "ca: {server_names: ['https://ca.example.com']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name partial wildcard", "ca: {server_names: ['ca*.example.com']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name a CIDR", "ca: {server_names: ['10.0.0.0/8']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name an IP with a zone", "ca: {server_names: ['fe80::1%eth0']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name a template", "ca: {server_names: ['{{ GetPrivateIP }}']}\n", "ca.server_names[0]", ErrInvalid},
		{"ca server name too long", "ca: {server_names: ['" + strings.Repeat("a.", 130) + "com']}\n", "ca.server_names[0]", ErrInvalid},
		{"too many ca server names", "ca: {server_names: [" + strings.Repeat("a.example, ", MaxCAServerNames) + "b.example]}\n", "ca.server_names", ErrInvalid},
		{"cert without key", "tls: {cert_file: /a.pem}\n", "tls.key_file", ErrInvalid},
		{"key without cert", "tls: {key_file: /a.pem}\n", "tls.cert_file", ErrInvalid},
		{"token without CA address", "tls: {token_file: /t, ca_file: /root.pem}\n", "tls.ca_addr", ErrInvalid},
		{"token without root file", "tls: {token_file: /t, ca_addr: \"10.0.0.1:15012\"}\n", "tls.ca_file", ErrInvalid},
		{"token and cert files", "tls: {token_file: /t, ca_addr: \"10.0.0.1:15012\", ca_file: /r.pem, cert_file: /c.pem, key_file: /k.pem}\n", "tls.token_file", ErrInvalid},
		{"CA address without port", "tls: {ca_addr: 10.0.0.1}\n", "tls.ca_addr", ErrInvalid},
		{"bridge address without port", "bridge: {addr: 10.0.0.1}\n", "bridge.addr", ErrInvalid},
		{"bridge on all addresses, nothing to advertise", "bridge: {addr: ':15008'}\n", "bridge.advertise", ErrInvalid},
		{"bridge advertise without bridge", "bridge: {advertise: '10.0.0.1:15008'}\n", "bridge.advertise", ErrInvalid},
		{"bridge namespace", "bridge: {addr: '10.0.0.1:15008', namespace: 'Bad Ns'}\n", "bridge.namespace", ErrInvalid},
		{"bridge streams", "bridge: {addr: '10.0.0.1:15008', max_streams_per_conn: 100000}\n", "bridge.max_streams_per_conn", ErrInvalid},
		{"bridge small window", "bridge: {addr: '10.0.0.1:15008', stream_window: 1024}\n", "bridge.stream_window", ErrInvalid},
		{"bridge huge window", "bridge: {addr: '10.0.0.1:15008', conn_window: 4294967296}\n", "bridge.conn_window", ErrInvalid},
		{"allowed host with a scheme", "admin: {allowed_hosts: [\"http://evil\"]}\n", "admin.allowed_hosts[0]", ErrInvalid},
		{"allowed host with a wildcard", "admin: {allowed_hosts: [ok.example, \"*.example\"]}\n", "admin.allowed_hosts[1]", ErrInvalid},
		{"allowed host bad port", "admin: {allowed_hosts: [\"a.example:99999\"]}\n", "admin.allowed_hosts[0]", ErrInvalid},
		{"open_reads not a bool", "admin: {open_reads: maybe}\n", "admin.open_reads", ErrInvalid},
		{"unknown admin key", "admin: {token: x}\n", "admin.token", ErrInvalid},
		{"top level list", "- a\n", "", ErrInvalid},
		{"two documents", "name: a\n---\nname: b\n", "", ErrSyntax},
		{"tabs", "log:\n\tlevel: debug\n", "", ErrSyntax},
		{"duplicate key", "name: a\nname: b\n", "", ErrSyntax},
		{"not UTF-8", "name: \xff\n", "", ErrSyntax},
		{"alias bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "", ErrTooLarge},
		{"deep nesting", "labels: " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n", "", ErrTooLarge},
		{"too large", strings.Repeat("#", MaxNodeFileBytes+1), "", ErrTooLarge},
	}
}

func TestParseNodeHostile(t *testing.T) {
	for _, tc := range hostileNodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNode("node.yaml", []byte(tc.in))
			es := errorsOf(t, "ParseNode", err)
			if n != nil {
				t.Errorf("ParseNode(%q) returned a Node with errors; want nil", tc.in)
			}
			e := findField(es, tc.field)
			if e == nil || !errors.Is(e, tc.sentinel) {
				t.Fatalf("ParseNode(%q) errors:\n%v\nwant %v at field %q", tc.in, es, tc.sentinel, tc.field)
			}
			if e.File != "node.yaml" {
				t.Errorf("problem File = %q, want node.yaml", e.File)
			}
		})
	}
}

func TestParseNodeReportsEveryProblem(t *testing.T) {
	_, err := ParseNode("node.yaml", []byte("log: {format: xml, level: loud}\ngossip: {port: 70000}\n"))
	es := errorsOf(t, "ParseNode", err)
	for _, f := range []string{"log.format", "log.level", "gossip.port"} {
		if findField(es, f) == nil {
			t.Errorf("ParseNode errors:\n%v\nwant one at %q", es, f)
		}
	}
	want := "node.yaml: gossip.port: port 70000 must be in 0..65535"
	if e := findField(es, "gossip.port"); e == nil || e.Error() != want {
		t.Errorf("gossip.port error = %v, want %q", e, want)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"1m30s"`)); err != nil || d.Duration != 90*time.Second {
		t.Errorf(`UnmarshalJSON("1m30s") = %v, %v; want 1m30s`, d, err)
	}
	if err := d.UnmarshalJSON([]byte(`null`)); err != nil || d.Duration != 90*time.Second {
		t.Errorf("UnmarshalJSON(null) changed the value to %v (err %v); want it kept", d, err)
	}
	if err := d.UnmarshalJSON([]byte(`30`)); err == nil {
		t.Error("UnmarshalJSON(30) = nil error, want an error (no unit)")
	}
	if b, err := (Duration{1500 * time.Millisecond}).MarshalJSON(); err != nil || string(b) != `"1.5s"` {
		t.Errorf("MarshalJSON(1.5s) = %s, %v; want \"1.5s\"", b, err)
	}
}

func TestCAListenAddr(t *testing.T) {
	for _, tc := range []struct {
		name, addr, bind, want string
	}{
		{"default follows bind_addr", ":15012", "127.0.0.1", "127.0.0.1:15012"},
		{"default without bind_addr listens everywhere", ":15012", "", ":15012"},
		{"IPv6 bind_addr", ":15012", "::1", "[::1]:15012"},
		{"explicit host wins", "10.0.0.5:15012", "127.0.0.1", "10.0.0.5:15012"},
		{"explicit all addresses wins", "0.0.0.0:15012", "127.0.0.1", "0.0.0.0:15012"},
		{"CA off", "", "127.0.0.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := DefaultNode()
			n.CA.Addr = tc.addr
			if got := n.CAListenAddr(tc.bind); got != tc.want {
				t.Fatalf("CAListenAddr(%q) with ca.addr %q = %q, want %q", tc.bind, tc.addr, got, tc.want)
			}
		})
	}
}

func TestBridgeAddrs(t *testing.T) {
	cases := []struct {
		addr, advertise, gateway, bind string
		listen, adv                    string
	}{
		{"", "", "", "", "", ""},
		{"10.0.0.5:15008", "", "", "", "10.0.0.5:15008", "10.0.0.5:15008"},
		{":15008", "", "", "10.0.0.7", "10.0.0.7:15008", "10.0.0.7:15008"},
		{":15008", "", "gw.example:15443", "", ":15008", "gw.example:15008"},
		{"0.0.0.0:15008", "", "10.1.1.1:15443", "", "0.0.0.0:15008", "10.1.1.1:15008"},
		{":15008", "203.0.113.9:15008", "", "", ":15008", "203.0.113.9:15008"},
	}
	for _, c := range cases {
		n := DefaultNode()
		n.Bridge.Addr, n.Bridge.Advertise, n.GatewayAddr = c.addr, c.advertise, c.gateway
		l := n.BridgeListenAddr(c.bind)
		if a := n.BridgeAdvertiseAddr(l); l != c.listen || a != c.adv {
			t.Errorf("bridge %+v: listen %q advertise %q; want %q %q", c, l, a, c.listen, c.adv)
		}
	}
}
