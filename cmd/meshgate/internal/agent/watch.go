package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadDebounce collects a burst of file events (an editor's write,
// rename and chmod) into one reload.
const reloadDebounce = 250 * time.Millisecond

// sourceDebounce coalesces bursts of catalog or store changes.
const sourceDebounce = 20 * time.Millisecond

// watch re-reads the resources on every Config.Reload receive and on file
// changes under ResourcesPath, until ctx is done.
func (a *Agent) watch(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if a.cfg.WatchFiles && a.cfg.ResourcesPath != "" {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			a.log.Warn("file watch unavailable; reload with SIGHUP", "err", err)
		} else {
			defer w.Close()
			dir := a.cfg.ResourcesPath
			if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
				// Watch the folder: editors replace files by rename.
				dir = filepath.Dir(dir)
			}
			if err := w.Add(dir); err != nil {
				a.log.Warn("file watch unavailable; reload with SIGHUP", "path", dir, "err", err)
			} else {
				events, errs = w.Events, w.Errors
			}
		}
	}
	// Fan the sources' change signals into one channel.
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	forward := func(ch <-chan struct{}) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}
	for _, src := range a.cfg.Sources {
		wg.Go(func() { forward(src.Changed()) })
	}
	for _, src := range a.cfg.Endpoints {
		wg.Go(func() { forward(src.Changed()) })
	}
	// Endpoint changes known service by service update the table in
	// place of a reload (updateEndpoints).
	var epChanged <-chan struct{}
	if src := a.changeSource(); src != nil {
		epChanged = src.EndpointsChanged()
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	epTimer := time.NewTimer(time.Hour)
	epTimer.Stop()
	defer epTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.cfg.Reload:
			a.log.Info("reload requested")
			_ = a.Reload(ctx)
		case ev := <-events:
			if a.relevant(ev.Name) {
				timer.Reset(reloadDebounce)
			}
		case <-changed:
			// Catalog and store changes arrive in bursts; coalesce briefly.
			timer.Reset(sourceDebounce)
		case <-epChanged:
			epTimer.Reset(sourceDebounce)
		case err := <-errs:
			a.log.Warn("file watch error", "err", err)
		case <-timer.C:
			_ = a.Reload(ctx)
		case <-epTimer.C:
			_ = a.updateEndpoints(ctx)
		}
	}
}

// relevant reports whether a changed file can affect the resources.
func (a *Agent) relevant(name string) bool {
	if fi, err := os.Stat(a.cfg.ResourcesPath); err == nil && !fi.IsDir() {
		return filepath.Clean(name) == filepath.Clean(a.cfg.ResourcesPath)
	}
	base := filepath.Base(name)
	if len(base) > 0 && base[0] == '.' {
		return false
	}
	ext := filepath.Ext(base)
	return ext == ".yaml" || ext == ".yml"
}
