package sni_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

// A gateway node: build a table from Istio resources, serve its
// listeners, rebuild on SIGHUP, drain on SIGTERM.
func ExampleServer() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	builder := sni.NewBuilder(sni.BuilderConfig{Logger: log})
	build := func() (*sni.Table, error) {
		set, err := config.Load("/etc/meshgate/resources")
		if err != nil {
			return nil, err
		}
		return builder.Build(sni.BuildInput{Config: set, Node: sni.NodeInfo{Name: "gw-1", Network: "net-a"}})
	}

	cfg := sni.DefaultServerConfig()
	cfg.Logger = log
	srv, err := sni.NewServer(cfg, &sni.Router{})
	if err != nil {
		log.Error("server", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		if t, err := build(); err != nil {
			log.Error("config refused; keeping the running table", "err", err)
		} else if err := srv.Apply(ctx, t); err != nil {
			var le *sni.ListenError
			if errors.As(err, &le) {
				log.Error("listener failed", "listener", le.Key, "err", le.Err)
			}
		}
		select {
		case <-hup:
			continue
		case <-ctx.Done():
		}
		break
	}
	// Drain: stop accepting, let connections finish (DrainTimeout), then
	// close the rest.
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", "err", err)
	}
}
