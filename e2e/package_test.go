package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fakeRoot makes an empty root filesystem with just the account files the
// shadow tools (useradd --prefix) need.
func fakeRoot(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":   "root:x:0:\n",
		"etc/shadow":  "root:*:19000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\n",
	}
	for name, body := range files {
		p := filepath.Join(r, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// accountID is the uid (passwd) or gid (group) of name in root's file.
func accountID(t *testing.T, root, file, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == name {
			id, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("%s: %q: bad id: %v", file, line, err)
			}
			return id
		}
	}
	t.Fatalf("no %q in %s/etc/%s:\n%s", name, root, file, b)
	return -1
}

// wantFile checks path's mode and owners inside root.
func wantFile(t *testing.T, root, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, path))
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", path, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, gid)
	}
}

func wantGone(t *testing.T, root, path string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(root, path)); err == nil || !os.IsNotExist(err) {
		t.Errorf("%s still there (err %v) ", path, err)
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// needRootAnd skips unless the test runs as root with every tool named.
func needRootAnd(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: files are installed with their owners")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (apt-get install it); skipped", tool)
		}
	}
}

// buildPackage runs `make package` for version into dir. The binary goes
// to dir too, so the one other tests run (bin/meshgate) is not replaced.
func buildPackage(t *testing.T, dir, version string) string {
	t.Helper()
	deb := filepath.Join(dir, "meshgate_"+version+".deb")
	run(t, "..", []string{"GOFLAGS=-p=1"}, "make", "--no-print-directory", "package",
		"VERSION="+version, "BIN="+filepath.Join(dir, "meshgate-"+version), "PKG_OUT="+deb)
	return deb
}

// TestPackageDpkgLifecycle builds two .debs with make package and takes
// the first through install, upgrade to the second, remove and purge in a
// throwaway root.
//
// The root is given with dpkg --root (instdir and admindir under it) and
// --force-script-chrootless: the maintainer scripts then run on this host
// with DPKG_ROOT set, as Debian's chrootless bootstrap does, instead of
// chrooted into a root that has no /bin/sh. --instdir alone would leave
// dpkg's database on the host, and a debootstrap chroot needs a mirror
// and minutes. --force-depends: the empty root has no passwd package.
func TestPackageDpkgLifecycle(t *testing.T) {
	needRootAnd(t, "dpkg", "dpkg-query", "make", "go", "useradd", "groupadd")
	work := t.TempDir()
	v1, v2 := buildPackage(t, work, "1.0.0"), buildPackage(t, work, "1.0.1")
	r := fakeRoot(t)
	dpkg := func(args ...string) string {
		return run(t, "", nil, "dpkg", append([]string{"--root=" + r, "--force-script-chrootless", "--force-depends", "--force-confold"}, args...)...)
	}
	dpkg("-i", v1)

	uid, gid := accountID(t, r, "passwd", "meshgate"), accountID(t, r, "group", "meshgate")
	if uid == 0 || uid >= 1000 || gid == 0 {
		t.Errorf("meshgate user %d:%d, want a system user and group (0 < id < 1000)", uid, gid)
	}
	if pw, _ := os.ReadFile(filepath.Join(r, "etc/passwd")); !bytes.Contains(pw, []byte(":/var/lib/meshgate:/usr/sbin/nologin")) {
		t.Errorf("meshgate user has no nologin shell / state home:\n%s", pw)
	}

	list := dpkg("-L", "meshgate")
	for _, p := range []string{
		"/usr/bin/meshgate", "/lib/systemd/system/meshgate.service", "/lib/systemd/system/meshgate-workload.service",
		"/etc/meshgate/node.yaml", "/etc/meshgate/resources/gateway.yaml",
		"/usr/share/doc/meshgate/README.md",
		"/usr/share/man/man1/meshgate.1.gz", "/usr/share/man/man1/meshgate-agent.1.gz",
		"/usr/share/bash-completion/completions/meshgate",
		"/usr/share/zsh/vendor-completions/_meshgate",
		"/usr/share/fish/vendor_completions.d/meshgate.fish",
	} {
		if !regexp.MustCompile("(?m)^" + regexp.QuoteMeta(p) + "$").MatchString(list) {
			t.Errorf("dpkg -L meshgate has no %s:\n%s", p, list)
		}
	}
	if strings.Contains(list, "meshgate-docs") {
		t.Errorf("the hidden docs command has a man page:\n%s", list)
	}
	conf := run(t, "", nil, "dpkg-query", "--root="+r, "-W", "-f=${Conffiles}", "meshgate")
	for _, p := range []string{"/etc/meshgate/node.yaml", "/etc/meshgate/resources/gateway.yaml"} {
		if !strings.Contains(conf, p+" ") {
			t.Errorf("conffiles %q lack %s", conf, p)
		}
	}
	wantFile(t, r, "usr/bin/meshgate", 0o755, 0, 0)
	wantFile(t, r, "lib/systemd/system/meshgate.service", 0o644, 0, 0)
	wantFile(t, r, "lib/systemd/system/meshgate-workload.service", 0o644, 0, 0)
	if _, err := os.Lstat(filepath.Join(r, "etc/systemd/system/multi-user.target.wants/meshgate-workload.service")); err == nil {
		t.Errorf("the package enabled meshgate-workload.service; it is for workload VMs and must stay disabled")
	}
	wantFile(t, r, "etc/meshgate", 0o750, 0, gid)
	wantFile(t, r, "etc/meshgate/resources", 0o750, 0, gid)
	wantFile(t, r, "etc/meshgate/node.yaml", 0o640, 0, gid)
	wantFile(t, r, "etc/meshgate/resources/gateway.yaml", 0o640, 0, gid)
	wantFile(t, r, "var/lib/meshgate", 0o750, uid, gid)
	wants := "etc/systemd/system/multi-user.target.wants/meshgate.service"
	if dst, err := os.Readlink(filepath.Join(r, wants)); err != nil || dst != "/lib/systemd/system/meshgate.service" {
		t.Errorf("unit not enabled: readlink %s = %q, %v", wants, dst, err)
	}

	bin := filepath.Join(r, "usr/bin/meshgate")
	if out := run(t, "", nil, bin, "--version"); out != "meshgate 1.0.0\n" {
		t.Errorf("installed meshgate --version = %q, want %q", out, "meshgate 1.0.0\n")
	}
	run(t, "", nil, bin, "validate", "-f", filepath.Join(r, "etc/meshgate/resources"))

	// An operator's edit and the node's state survive the upgrade.
	nodeYAML := filepath.Join(r, "etc/meshgate/node.yaml")
	edited := append(must(os.ReadFile(nodeYAML)), "# edited by the operator\n"...)
	if err := os.WriteFile(nodeYAML, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(r, "var/lib/meshgate/raft.db")
	if err := os.WriteFile(state, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg("-i", v2)
	if out := run(t, "", nil, bin, "--version"); out != "meshgate 1.0.1\n" {
		t.Errorf("after the upgrade meshgate --version = %q, want %q", out, "meshgate 1.0.1\n")
	}
	if got := must(os.ReadFile(nodeYAML)); !bytes.Equal(got, edited) {
		t.Errorf("the upgrade changed the edited node.yaml:\n%s", got)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("the upgrade lost the state: %v", err)
	}
	if n := strings.Count(string(must(os.ReadFile(filepath.Join(r, "etc/passwd")))), "\nmeshgate:"); n != 1 {
		t.Errorf("%d meshgate users after the upgrade, want 1", n)
	}
	wantFile(t, r, "etc/meshgate/node.yaml", 0o640, 0, gid)
	wantFile(t, r, "var/lib/meshgate", 0o750, uid, gid)

	// remove keeps the state and the conffiles; purge deletes them.
	dpkg("-r", "meshgate")
	wantGone(t, r, "usr/bin/meshgate")
	wantGone(t, r, "lib/systemd/system/meshgate.service")
	if _, err := os.Stat(state); err != nil {
		t.Errorf("remove deleted the state: %v", err)
	}
	if _, err := os.Stat(nodeYAML); err != nil {
		t.Errorf("remove deleted the conffile: %v", err)
	}
	dpkg("-P", "meshgate")
	wantGone(t, r, "var/lib/meshgate")
	wantGone(t, r, "etc/meshgate/node.yaml")
	wantGone(t, r, wants)
	out, err := exec.Command("dpkg-query", "--root="+r, "-W", "meshgate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no packages found") {
		t.Errorf("after purge dpkg-query -W meshgate = %v, %q; want the package forgotten", err, out)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// tree lists every path under root with its mode, owners and content.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d", strings.TrimPrefix(p, root), fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() && fi.Size() < 1<<16 {
			fmt.Fprintf(&b, " %q", must(os.ReadFile(p)))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestInstallScriptIdempotent runs deploy/install.sh (the tarball install)
// twice into a throwaway root (MESHGATE_ROOT), checks that the second run
// changes nothing and keeps an operator's edit, then uninstalls.
func TestInstallScriptIdempotent(t *testing.T) {
	needRootAnd(t, "bash", "useradd", "groupadd")
	r := fakeRoot(t)
	env := []string{"MESHGATE_ROOT=" + r}
	bin := meshgateBin(t)
	run(t, "", env, "bash", "../deploy/install.sh", bin)
	uid, gid := accountID(t, r, "passwd", "meshgate"), accountID(t, r, "group", "meshgate")
	wantFile(t, r, "usr/local/bin/meshgate", 0o755, 0, 0)
	wantFile(t, r, "etc/meshgate/node.yaml", 0o640, 0, gid)
	wantFile(t, r, "etc/meshgate/resources/gateway.yaml", 0o640, 0, gid)
	wantFile(t, r, "var/lib/meshgate", 0o750, uid, gid)
	wantFile(t, r, "etc/systemd/system/meshgate.service", 0o644, 0, 0)
	unit := string(must(os.ReadFile(filepath.Join(r, "etc/systemd/system/meshgate.service"))))
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/meshgate agent") {
		t.Errorf("installed unit does not start /usr/local/bin/meshgate:\n%s", unit)
	}

	nodeYAML := filepath.Join(r, "etc/meshgate/node.yaml")
	if err := os.WriteFile(nodeYAML, append(must(os.ReadFile(nodeYAML)), "# edited\n"...), 0o640); err != nil {
		t.Fatal(err)
	}
	// The shadow tools leave backups (passwd-, ...) and rewrite the files
	// they touch; compare everything else.
	skipAccounts := regexp.MustCompile(`(?m)^/etc/(passwd|group|shadow|gshadow)-? .*\n`)
	before := skipAccounts.ReplaceAllString(tree(t, r), "")
	run(t, "", env, "bash", "../deploy/install.sh", bin)
	if after := skipAccounts.ReplaceAllString(tree(t, r), ""); after != before {
		t.Errorf("a second install.sh run changed the root:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if n := strings.Count(string(must(os.ReadFile(filepath.Join(r, "etc/passwd")))), "\nmeshgate:"); n != 1 {
		t.Errorf("%d meshgate users after two runs, want 1", n)
	}

	run(t, "", env, "bash", "../deploy/install.sh", "--uninstall")
	wantGone(t, r, "usr/local/bin/meshgate")
	wantGone(t, r, "etc/systemd/system/meshgate.service")
	if !strings.HasSuffix(string(must(os.ReadFile(nodeYAML))), "# edited\n") {
		t.Error("uninstall lost the edited node.yaml")
	}
}

// TestUnitVerifyAndSecurity runs systemd-analyze on the shipped unit:
// verify must print nothing and the offline security exposure must be at
// most 2.0 ("OK"). verify checks ExecStart's binary exists, so it runs on
// a copy pointing at the binary under test.
func TestUnitVerifyAndSecurity(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not found (apt-get install systemd); unit checks skipped")
	}
	src := string(must(os.ReadFile("../deploy/meshgate.service")))
	unit := filepath.Join(t.TempDir(), "meshgate.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(src, "/usr/bin/meshgate", meshgateBin(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for meshgate\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in systemd-analyze security output:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=yes: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f > 2.0:\n%s", score, out)
	}
}
