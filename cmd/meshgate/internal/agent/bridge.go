package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/sni/hbone"
)

// BridgeConfig turns on the node's HBONE bridge: Pool dials other
// networks' gateways for connections whose endpoint is remote, and a
// listener on Addr accepts their tunnels, resolved by the node's own data
// plane (sni.Server.ConnectBridge).
type BridgeConfig struct {
	// Addr is the listen address (host:port, host resolved).
	Addr string
	// Namespace is the namespace the bridge's receiving side sees services
	// as ("" = istio-system).
	Namespace string
	// Pool configures the dialling side; Source and Authorizer required.
	Pool hbone.PoolConfig
	// Server configures the listening side; the agent sets Connector.
	Server hbone.ServerConfig
}

// bridge is the running bridge: a Component.
type bridge struct {
	addr     string
	pool     *hbone.Pool
	srv      *hbone.Server
	drain    time.Duration
	reserved *catalog.Listeners

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

// Start binds the bridge listener and serves it.
func (b *bridge) Start(context.Context) error {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		return fmt.Errorf("bridge listener %s: %w", b.addr, err)
	}
	if b.reserved != nil {
		b.reserved.Set("bridge", ln.Addr())
	}
	b.mu.Lock()
	b.ln, b.done = ln, make(chan struct{})
	b.mu.Unlock()
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(ln)
	}()
	return nil
}

// Addr is the bound bridge address (nil before Start).
func (b *bridge) Addr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return nil
	}
	return b.ln.Addr()
}

// Close drains the tunnels it serves (up to the drain timeout) and closes
// the pool.
func (b *bridge) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), max(b.drain, time.Second))
	defer cancel()
	err := b.srv.Shutdown(ctx)
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done != nil {
		<-done
	}
	_ = b.pool.Close()
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // streams still open at the deadline were closed
	}
	return err
}
