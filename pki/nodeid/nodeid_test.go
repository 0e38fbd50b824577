package nodeid_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/nodeid"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var nodeID = pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}

// TestNodeIdentitySelfIssueRenewsWithoutDroppingConnections starts a node
// identity the way a fleet's first node does (temporary certificate, then
// its own CA), lets a short-lived certificate come up for renewal, and
// checks that the renewed one is kept on disk, presented to new peers, and
// that a connection made before the renewal keeps working.
func TestNodeIdentitySelfIssueRenewsWithoutDroppingConnections(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.DefaultTTL = 6 * time.Second
	ca, _ := pkitest.NewCA(t, cfg)
	dir := t.TempDir()
	ni, err := nodeid.New(t.Context(), nodeid.Config{DataDir: dir, Identity: nodeID, SelfIssue: true, Logger: pkitest.Logger(t)})
	if err != nil {
		t.Fatalf("New(SelfIssue) = %v", err)
	}
	if ni.Current() != nil {
		t.Fatal("Current() before AttachCA is set; want nil while the temporary certificate is in use")
	}
	if err := ni.AttachCA(t.Context(), ca); err != nil {
		t.Fatalf("AttachCA = %v", err)
	}
	first := ni.Current()
	if first == nil || first.Identity != nodeID {
		t.Fatalf("Current() after AttachCA = %+v; want a bundle for %s", first, nodeID)
	}
	kept, err := client.LoadBundle(filepath.Join(dir, nodeid.CertDir))
	if err != nil || kept.Chain[0].SerialNumber.Cmp(first.Chain[0].SerialNumber) != 0 {
		t.Fatalf("LoadBundle(data dir) = %v; want the issued certificate kept on disk", err)
	}

	// Two "nodes" sharing the identity source: a server and a client.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ni.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	echo := func(c *tls.Conn) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("x\n")); err != nil {
			return err
		}
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	dial := func() *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), ni.TLSConfig())
		if err != nil {
			t.Fatalf("dial with the node identity: %v", err)
		}
		if err := echo(c); err != nil {
			t.Fatalf("echo over a new connection: %v", err)
		}
		return c
	}
	held := dial()
	defer held.Close()

	if err := ni.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ni.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for ni.Current().Chain[0].SerialNumber.Cmp(first.Chain[0].SerialNumber) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the node certificate was not renewed within 30s of a 6s lifetime")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := echo(held); err != nil {
		t.Fatalf("connection made before the renewal: %v; want it to keep working", err)
	}
	c := dial()
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first.Chain[0].SerialNumber) == 0 {
		t.Fatalf("new connection got the old certificate (serial %x); want the renewed one", got)
	}
	kept, err = client.LoadBundle(filepath.Join(dir, nodeid.CertDir))
	if err != nil || kept.Chain[0].SerialNumber.Cmp(first.Chain[0].SerialNumber) == 0 {
		t.Fatalf("LoadBundle after renewal = %v; want a renewed certificate on disk, not the first", err)
	}

	if err := ni.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ni.Close(); err != nil {
		t.Fatalf("second Close = %v; want nil (idempotent)", err)
	}
}

func TestNodeIdentityNeedsAWayToGetACertificate(t *testing.T) {
	_, err := nodeid.New(t.Context(), nodeid.Config{DataDir: t.TempDir(), Identity: nodeID})
	if !errors.Is(err, nodeid.ErrConfig) || !strings.Contains(err.Error(), "token_file") {
		t.Fatalf("New with no kept certificate, no token and no SelfIssue = %v; want ErrConfig naming the join token", err)
	}
	_, err = nodeid.New(t.Context(), nodeid.Config{DataDir: t.TempDir(), Identity: nodeID, TokenFile: "/nonexistent"})
	if !errors.Is(err, nodeid.ErrConfig) {
		t.Fatalf("New with a token but no CA address = %v; want ErrConfig", err)
	}
	if _, err := nodeid.New(t.Context(), nodeid.Config{DataDir: t.TempDir()}); !errors.Is(err, nodeid.ErrConfig) {
		t.Fatalf("New without an identity = %v; want ErrConfig", err)
	}
}
