package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/config"
)

// cliEnv are the variables the CLI reads; tests start with all of them
// empty so the machine's environment cannot leak in.
var cliEnv = []string{envConfig, envAddr, envDataDir, envCAAddr, envRootCert, acl.EnvToken, acl.EnvTokenFile}

// noNodeDefaults empties the CLI's environment (t.Setenv; MESHGATE_CONFIG
// set but empty means no node.yaml) and points the system node.yaml at a
// file that does not exist.
func noNodeDefaults(t *testing.T) nodeDefaults {
	t.Helper()
	for _, k := range cliEnv {
		t.Setenv(k, "")
	}
	os.Unsetenv(envConfig) // unset, not empty: the system file decides
	return nodeDefaults{lookupEnv: os.LookupEnv, systemFile: filepath.Join(t.TempDir(), "absent", "node.yaml")}
}

// runCLI runs the command tree with args and returns stdout, stderr and
// the error Execute returned.
func runCLI(t *testing.T, d nodeDefaults, args ...string) (string, string, error) {
	t.Helper()
	root := newRootWith(d)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// closedAddr is a loopback address nothing listens on: a port that was
// bound a moment ago and closed.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolved parses args into the named command of a fresh tree, applies d
// and returns the command.
func resolved(t *testing.T, d nodeDefaults, args ...string) (*cobra.Command, error) {
	t.Helper()
	root := newRootWith(d)
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Fatalf("Find(%q): %v", args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("ParseFlags(%q): %v", rest, err)
	}
	return cmd, d.apply(cmd)
}

func flagValue(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	f := cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("%s has no --%s", cmd.CommandPath(), name)
	}
	return f.Value.String()
}

// TestNodeDefaultsPrecedence: each per-node flag comes from the flag, then
// its environment variable, then node.yaml (--config, MESHGATE_CONFIG,
// else the system file), then the built-in default.
func TestNodeDefaultsPrecedence(t *testing.T) {
	dir := t.TempDir()
	system := writeFile(t, filepath.Join(dir, "etc", "node.yaml"), `
name: gw-1
admin_addr: 127.0.0.2:15100
data_dir: `+filepath.Join(dir, "system-data")+`
bind_addr: 127.0.0.3
ca: {addr: ":15999"}
`)
	other := writeFile(t, filepath.Join(dir, "other.yaml"), `
admin_addr: 0.0.0.0:16000
data_dir: `+filepath.Join(dir, "other-data")+`
ca: {addr: "[::]:16012"}
`)
	enrolled := writeFile(t, filepath.Join(dir, "enrolled.yaml"), `
admin_addr: 127.0.0.4:15000
data_dir: `+filepath.Join(dir, "enrolled-data")+`
ca: {addr: ""}
tls: {token_file: /x/token, ca_file: /x/root.pem, ca_addr: "10.9.8.7:15012"}
`)
	type want struct{ admin, dataDir, caAddr, rootCert string }
	builtin := want{"127.0.0.1:15000", defaultDataDir(), "127.0.0.1:15012", ""}
	for _, tc := range []struct {
		name    string
		env     map[string]string // set with t.Setenv; absent means unset
		system  bool              // the system node.yaml exists
		args    []string          // after the command path
		cmd     []string          // command path (default: token create)
		want    want
		sources map[string]string // flag -> recorded source
	}{
		{name: "built-in defaults", want: builtin},
		{name: "system node.yaml", system: true,
			want:    want{"127.0.0.2:15100", filepath.Join(dir, "system-data"), "127.0.0.3:15999", ""},
			sources: map[string]string{"ca-addr": "ca.addr in " + system, "data-dir": "data_dir in " + system}},
		{name: "MESHGATE_CONFIG over system file", system: true, env: map[string]string{envConfig: other},
			want: want{"127.0.0.1:16000", filepath.Join(dir, "other-data"), "[::1]:16012", ""}},
		{name: "--config over MESHGATE_CONFIG", system: true, env: map[string]string{envConfig: system}, args: []string{"--config", other},
			want: want{"127.0.0.1:16000", filepath.Join(dir, "other-data"), "[::1]:16012", ""}},
		{name: "empty MESHGATE_CONFIG reads no node.yaml", system: true, env: map[string]string{envConfig: ""}, want: builtin},
		{name: "env over node.yaml", system: true,
			env:     map[string]string{envAddr: "10.0.0.5:15000", envDataDir: "/srv/mg", envCAAddr: "10.0.0.5:15012", envRootCert: "/srv/root.pem"},
			want:    want{"10.0.0.5:15000", "/srv/mg", "10.0.0.5:15012", "/srv/root.pem"},
			sources: map[string]string{"data-dir": "$" + envDataDir, "ca-addr": "$" + envCAAddr, "root-cert": "$" + envRootCert}},
		{name: "env alone", env: map[string]string{envAddr: "10.0.0.6:15000"},
			want: want{"10.0.0.6:15000", builtin.dataDir, builtin.caAddr, ""}},
		{name: "empty env is unset", system: true, env: map[string]string{envAddr: ""},
			want: want{"127.0.0.2:15100", filepath.Join(dir, "system-data"), "127.0.0.3:15999", ""}},
		{name: "flag over env and node.yaml", system: true, env: map[string]string{envAddr: "10.0.0.5:15000", envDataDir: "/srv/mg"},
			args:    []string{"--data-dir", "/flag/data", "--ca-addr", "127.0.0.9:2", "--root-cert", "/flag/root.pem"},
			want:    want{"", "/flag/data", "127.0.0.9:2", "/flag/root.pem"},
			sources: map[string]string{"data-dir": "", "ca-addr": "", "root-cert": ""}},
		{name: "admin flag over env and node.yaml", system: true, env: map[string]string{envAddr: "10.0.0.5:15000"}, cmd: []string{"members"},
			args:    []string{"--admin", "127.0.0.9:1"},
			want:    want{admin: "127.0.0.9:1", dataDir: filepath.Join(dir, "system-data")},
			sources: map[string]string{"admin": "", "data-dir": "data_dir in " + system}},
		{name: "node without a CA uses the CA it enrolls with", env: map[string]string{envConfig: enrolled},
			want:    want{"127.0.0.4:15000", filepath.Join(dir, "enrolled-data"), "10.9.8.7:15012", ""},
			sources: map[string]string{"ca-addr": "tls.ca_addr in " + enrolled}},
		{name: "admin command", system: true, cmd: []string{"members"},
			want:    want{admin: "127.0.0.2:15100", dataDir: filepath.Join(dir, "system-data")},
			sources: map[string]string{"admin": "admin_addr in " + system}},
		{name: "admin command env", env: map[string]string{envAddr: "10.0.0.5:15000"}, cmd: []string{"get"},
			want:    want{admin: "10.0.0.5:15000", dataDir: builtin.dataDir},
			sources: map[string]string{"admin": "$" + envAddr}},
		{name: "ca init data dir", system: true, cmd: []string{"ca", "init"},
			want: want{dataDir: filepath.Join(dir, "system-data")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := noNodeDefaults(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if tc.system {
				d.systemFile = system
			}
			path := tc.cmd
			if path == nil {
				path = []string{"token", "create"}
			}
			cmd, err := resolved(t, d, append(append([]string(nil), path...), tc.args...)...)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			check := func(flag, want string) {
				if cmd.Flags().Lookup(flag) == nil {
					return
				}
				if got := flagValue(t, cmd, flag); got != want {
					t.Errorf("%s --%s = %q, want %q", cmd.CommandPath(), flag, got, want)
				}
			}
			check("admin", tc.want.admin)
			check("data-dir", tc.want.dataDir)
			check("ca-addr", tc.want.caAddr)
			check("root-cert", tc.want.rootCert)
			for flag, want := range tc.sources {
				if cmd.Flags().Lookup(flag) == nil {
					t.Fatalf("%s has no --%s", cmd.CommandPath(), flag)
				}
				if got := flagSource(cmd, flag); got != want {
					t.Errorf("flagSource(--%s) = %q, want %q", flag, got, want)
				}
			}
		})
	}
}

// TestNodeDefaultsErrors: a named node.yaml that is missing or invalid is
// an error naming the file (and the key); it is not read at all when every
// per-node flag was given.
func TestNodeDefaultsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "admin_adr: 127.0.0.1:15000\n")
	badBind := writeFile(t, filepath.Join(dir, "bind.yaml"), "bind_addr: '{{ GetInterfaceIP \"no-such-if0\" }}'\n")
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct {
		name string
		env  string // MESHGATE_CONFIG
		args []string
		want []string // substrings of the error; nil: no error
	}{
		{"missing --config", "", []string{"--config", missing}, []string{missing}},
		{"missing MESHGATE_CONFIG", missing, nil, []string{missing, envConfig}},
		{"unknown key", bad, nil, []string{bad, "admin_adr"}},
		{"bind template renders nothing", badBind, nil, []string{badBind, "bind_addr"}},
		{"not read when every flag is given", bad, []string{"--data-dir", "/d", "--ca-addr", "c:2", "--root-cert", "/r"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := noNodeDefaults(t)
			if tc.env != "" {
				t.Setenv(envConfig, tc.env)
			}
			_, err := resolved(t, d, append([]string{"token", "create"}, tc.args...)...)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("apply = %v, want node.yaml left unread", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("apply = nil, want an error naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("apply error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestCommandWorksFromNodeYAML: `get` with no flags reaches the admin
// address node.yaml names and reads the token from its data dir.
func TestCommandWorksFromNodeYAML(t *testing.T) {
	fa, addr := newFakeAdmin(t, "kind: ServiceEntry\n")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeFile(t, filepath.Join(data, acl.OperatorTokenFile), "tok-from-data-dir\n")
	d := noNodeDefaults(t)
	d.systemFile = writeFile(t, filepath.Join(dir, "node.yaml"), "admin_addr: "+addr+"\ndata_dir: "+data+"\n")
	out, _, err := runCLI(t, d, "get", "se")
	if err != nil || out != "kind: ServiceEntry\n" {
		t.Fatalf("get se = %q, %v", out, err)
	}
	reqs := fa.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer tok-from-data-dir" {
		t.Fatalf("get se sent %d requests (auth %q), want one with the data dir's operator token", len(reqs), reqs[0].Header.Get("Authorization"))
	}
}

// TestEveryCommandHasExample walks the whole tree (cobra's help and
// completion commands included) and fails for any visible command whose
// --help would show no Example.
func TestEveryCommandHasExample(t *testing.T) {
	var n int
	walk(newRootWith(noNodeDefaults(t)), func(c *cobra.Command) {
		n++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no Example", c.CommandPath())
		}
	})
	if n < 30 {
		t.Fatalf("walked %d commands, want the whole tree (30 or more)", n)
	}
}

// walk calls f for c and every visible command below it.
func walk(c *cobra.Command, f func(*cobra.Command)) {
	if c.Hidden || c.Deprecated != "" {
		return
	}
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

// TestExamplesParse: every `meshgate ...` line of every Example names an
// existing command and only flags it has, with the arguments it takes,
// so examples cannot go stale.
func TestExamplesParse(t *testing.T) {
	d := noNodeDefaults(t)
	var lines int
	walk(newRootWith(d), func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			args := exampleArgs(line)
			if args == nil {
				continue
			}
			lines++
			root := newRootWith(d)
			got, rest, err := root.Find(args)
			if err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
				continue
			}
			if c != c.Root() && got.CommandPath() != c.CommandPath() && !strings.HasPrefix(got.CommandPath(), c.CommandPath()+" ") {
				t.Errorf("%s example %q runs %s", c.CommandPath(), line, got.CommandPath())
			}
			if err := got.ParseFlags(rest); err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
				continue
			}
			if err := got.ValidateArgs(got.Flags().Args()); err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
			}
			if err := got.ValidateRequiredFlags(); err != nil {
				t.Errorf("%s example %q: %v", c.CommandPath(), line, err)
			}
		}
	})
	if lines < 40 {
		t.Fatalf("checked %d example lines, want every one (40 or more)", lines)
	}
}

// exampleArgs splits an example line into the arguments after
// "meshgate": leading VAR=value words are skipped, quotes are removed, and
// the line ends at a pipe or redirection. Lines that are not a meshgate
// command give nil.
func exampleArgs(line string) []string {
	var words []string
	var cur strings.Builder
	quote := rune(0)
	in := false
	for _, r := range strings.TrimSpace(line) {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	for len(words) > 0 && strings.Contains(words[0], "=") {
		words = words[1:]
	}
	if len(words) == 0 || words[0] != "meshgate" {
		return nil
	}
	args := []string{}
	for _, w := range words[1:] {
		if w == "|" || w == ">" || w == ">>" || w == "&&" || w == ";" {
			break
		}
		args = append(args, w)
	}
	return args
}

// TestVersionFlag: --version prints exactly what `meshgate version` does.
func TestVersionFlag(t *testing.T) {
	d := noNodeDefaults(t)
	flag, _, err := runCLI(t, d, "--version")
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	cmd, _, err := runCLI(t, d, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	if flag != cmd || flag != versionLine()+"\n" {
		t.Fatalf("--version printed %q, version printed %q; want both %q", flag, cmd, versionLine()+"\n")
	}
}

// testRoot writes a self-signed CA certificate that client.LoadRoots
// accepts and returns its path.
func testRoot(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cli test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(t.TempDir(), "root-cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// TestUnreachableIsOneSentence: a node that is not listening gives one
// sentence naming the API, the address, the cause and the flag and
// variable to fix it, over HTTP (admin), HTTPS and gRPC (certificate API).
func TestUnreachableIsOneSentence(t *testing.T) {
	root := testRoot(t)
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "admin.key"), "k\n")
	tokenFile := writeFile(t, filepath.Join(t.TempDir(), "t.token"), "tok\n")
	for _, tc := range []struct {
		name string
		env  string // set to the closed address
		args func(addr string) []string
		want func(addr string) string
	}{
		{"admin", "", func(a string) []string { return []string{"get", "dr", "--admin", a, "--admin-token", "x"} },
			func(a string) string {
				return "cannot reach the meshgate admin API at " + a + ": connection refused; is the node running? set --admin or MESHGATE_ADDR"
			}},
		{"admin from env", envAddr, func(a string) []string { return []string{"members", "--admin-token", "x"} },
			func(a string) string {
				return "cannot reach the meshgate admin API at " + a + " (from $MESHGATE_ADDR): connection refused; is the node running? set --admin or MESHGATE_ADDR"
			}},
		{"certificate API over HTTPS", "", func(a string) []string { return []string{"ca", "show", "--ca-addr", a, "--root-cert", root} },
			func(a string) string {
				return "cannot reach the meshgate certificate API at " + a + ": connection refused; is the node running? set --ca-addr or MESHGATE_CA_ADDR"
			}},
		{"certificate API token endpoint", "", func(a string) []string {
			return []string{"token", "create", "--namespace", "default", "--service-account", "r", "--ca-addr", a, "--root-cert", root, "--data-dir", data}
		}, func(a string) string {
			return "cannot reach the meshgate certificate API at " + a + ": connection refused; is the node running? set --ca-addr or MESHGATE_CA_ADDR"
		}},
		{"certificate API over gRPC", "", func(a string) []string {
			return []string{"cert", "issue", "--token", tokenFile, "--namespace", "default", "--service-account", "r", "--out", t.TempDir(), "--ca-addr", a, "--root-cert", root, "--timeout", "10s"}
		}, func(a string) string {
			return "cannot reach the meshgate certificate API at " + a + ": connection refused; is the node running? set --ca-addr or MESHGATE_CA_ADDR"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := noNodeDefaults(t)
			addr := closedAddr(t)
			if tc.env != "" {
				t.Setenv(tc.env, addr)
			}
			args := tc.args(addr)
			_, _, err := runCLI(t, d, args...)
			var u *unreachableError
			if !errors.As(err, &u) {
				t.Fatalf("meshgate %s = %v, want an unreachable error", strings.Join(args, " "), err)
			}
			if got, want := err.Error(), tc.want(addr); got != want {
				t.Fatalf("meshgate %s error\n got %q\nwant %q", strings.Join(args, " "), got, want)
			}
		})
	}
}

// TestReachKeepsOtherErrors: only failures to connect are rewritten.
func TestReachKeepsOtherErrors(t *testing.T) {
	other := errors.New("node said no")
	if got := adminEndpoint("127.0.0.1:1", "").reach(other); got != other {
		t.Fatalf("reach(%v) = %v, want it unchanged", other, got)
	}
	if got := adminEndpoint("127.0.0.1:1", "").reach(nil); got != nil {
		t.Fatalf("reach(nil) = %v", got)
	}
}

// TestWriteSecret: the file is 0600 whatever the umask; an existing file
// is refused without force (a symlink too) and replaced by a 0600 file
// with it.
func TestWriteSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "op.token")
	if err := checkSecretOut(p, false); err != nil {
		t.Fatalf("checkSecretOut(new file) = %v", err)
	}
	if err := writeSecret(p, "s3cret", false); err != nil {
		t.Fatalf("writeSecret: %v", err)
	}
	assertSecret(t, p, "s3cret\n")
	if err := checkSecretOut(p, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("checkSecretOut(existing) = %v, want a refusal that mentions --force", err)
	}
	if err := writeSecret(p, "other", false); err == nil {
		t.Fatal("writeSecret over an existing file without force succeeded")
	}
	assertSecret(t, p, "s3cret\n")

	loose := writeFile(t, filepath.Join(dir, "loose.token"), "old\n") // 0644
	if err := writeSecret(loose, "new", true); err != nil {
		t.Fatalf("writeSecret(force): %v", err)
	}
	assertSecret(t, loose, "new\n")

	target := writeFile(t, filepath.Join(dir, "target"), "keep\n")
	link := filepath.Join(dir, "link.token")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := checkSecretOut(link, false); err == nil {
		t.Fatal("checkSecretOut(symlink) = nil, want a refusal")
	}
	if err := writeSecret(link, "x", false); err == nil {
		t.Fatal("writeSecret through a symlink succeeded")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("symlink target now holds %q", b)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func assertSecret(t *testing.T, path, want string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != secretMode {
		t.Errorf("%s mode = %v, want %v", path, fi.Mode(), secretMode)
	}
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
}

// TestTokenOutRefusedBeforeMinting: an existing --out file is refused
// before the CA is asked (the address here answers nothing, so reaching it
// would be a different error).
func TestTokenOutRefusedBeforeMinting(t *testing.T) {
	d := noNodeDefaults(t)
	out := writeFile(t, filepath.Join(t.TempDir(), "r.token"), "old\n")
	for _, args := range [][]string{
		{"token", "create", "--namespace", "default", "--service-account", "r", "--ca-addr", closedAddr(t), "--out", out},
		{"acl", "token", "create", "--scope", "read", "--admin", closedAddr(t), "--admin-token", "x", "--out", out},
	} {
		_, _, err := runCLI(t, d, args...)
		if err == nil || !strings.Contains(err.Error(), out+" already exists; pass --force") {
			t.Fatalf("meshgate %s = %v, want a refusal naming %s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAgentWarnsWithoutNodeFile: the warning lists what the node will run
// with; a named file is logged at info.
func TestAgentWarnsWithoutNodeFile(t *testing.T) {
	for _, tc := range []struct {
		file      string
		wantLevel string
		wantMsg   string
	}{
		{"", "WARN", "no node.yaml (--config, $MESHGATE_CONFIG or /etc/meshgate/node.yaml): running with the built-in node settings, outside any fleet"},
		{"/etc/x/node.yaml", "INFO", "node settings read"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, nil))
		n := config.DefaultNode()
		logNodeSettings(log, tc.file, n, "127.0.0.1:15012")
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", buf.String(), err)
		}
		if rec["level"] != tc.wantLevel || rec["msg"] != tc.wantMsg {
			t.Fatalf("logNodeSettings(%q) logged %v, want %s %q", tc.file, rec, tc.wantLevel, tc.wantMsg)
		}
		if tc.file == "" && (rec["admin"] != n.AdminAddr || rec["data_dir"] != n.DataDir || rec["ca"] != "127.0.0.1:15012") {
			t.Fatalf("warning %v does not say what the node serves", rec)
		}
	}
}

// TestDialAddr: listen addresses become ones a local client can dial.
func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":15000":          "127.0.0.1:15000",
		"0.0.0.0:15000":   "127.0.0.1:15000",
		"[::]:15000":      "[::1]:15000",
		"10.0.0.5:15000":  "10.0.0.5:15000",
		"localhost:15000": "localhost:15000",
		"":                "",
		"no-port":         "no-port",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
