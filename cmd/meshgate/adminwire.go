package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/cmd/meshgate/internal/agent"
	"github.com/meshgate/meshgate/config"
)

// bootstrapWait bounds how long a bootstrap_expect node keeps trying to
// make the fleet's first operator token while raft elects a leader.
const bootstrapWait = 5 * time.Minute

// wireAdmin gives the admin listener its tokens and node.yaml's admin
// settings. Tokens live in the replicated store when the node is in a
// fleet, else in tokenDir/acl-tokens.json. A node that bootstraps (alone,
// bootstrap: true, or bootstrap_expect: the first to get its write in)
// writes the first operator token to tokenDir/operator.token; a node that
// joins does not mint one.
func wireAdmin(ctx context.Context, cfg *agent.Config, n *config.Node, tokenDir string, log *slog.Logger) error {
	var store acl.Store = acl.NewFileStore(tokenDir)
	var cl *agent.Cluster
	for _, c := range cfg.Components {
		if x, ok := c.(*agent.Cluster); ok {
			cl = x
			store = acl.NewKVStore(x.Node())
		}
	}
	m := acl.NewManager(store)
	cfg.AdminTokens = m
	cfg.AdminAllowedHosts = n.Admin.AllowedHosts
	cfg.AdminOpenReads = n.Admin.OpenReads
	cfg.Pprof = n.Admin.Pprof
	path := filepath.Join(tokenDir, acl.OperatorTokenFile)
	bootstrap := func(ctx context.Context) error {
		t, err := m.Bootstrap(ctx, path)
		switch {
		case errors.Is(err, acl.ErrBootstrapped):
			return nil
		case err != nil:
			return err
		}
		log.Info("operator token written; the CLI reads it by default", "path", path, "token_id", t.ID)
		return nil
	}
	switch {
	case cl == nil || n.Bootstrap:
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return bootstrap(bctx)
	case n.BootstrapExpect > 0:
		// raft may not have a leader yet; the write waits for one. The
		// goroutine ends with ctx or after bootstrapWait.
		go func() {
			bctx, cancel := context.WithTimeout(ctx, bootstrapWait)
			defer cancel()
			if err := bootstrap(bctx); err != nil && ctx.Err() == nil {
				log.Warn("no bootstrap operator token made", "err", err)
			}
		}()
	}
	return nil
}

// wireRegistrationScope makes the catalog's registration API check
// declared services and allowed subsets against the agent's running
// configuration.
func wireRegistrationScope(cfg *agent.Config, a *agent.Agent, n *config.Node) {
	scope := &acl.RegistrationScope{Config: a.Config, AllowUndeclared: n.Catalog.AllowUndeclaredServices, Guard: a.Guard()}
	for _, c := range cfg.Components {
		if cl, ok := c.(*agent.Cluster); ok {
			cl.SetRegistrationPolicy(scope)
		}
		// Registrations by workload certificate get the same checks, with
		// the workload group's subsets.
		if ca, ok := c.(*agent.CA); ok && ca.Workloads() != nil {
			ca.Workloads().SetScope(scope)
		}
	}
}
