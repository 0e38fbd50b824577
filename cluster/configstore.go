package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/meshgate/meshgate/config"
)

// ConfigPrefix is the key prefix of mesh config resources. Each resource
// is stored as its own YAML document under
// "config/<Kind>/<namespace>/<name>" and parsed with config.Parse when
// read.
const ConfigPrefix = "config/"

// ConfigKey returns the key of one config resource.
func ConfigKey(kind config.Kind, namespace, name string) string {
	if namespace == "" {
		namespace = config.DefaultNamespace
	}
	return ConfigPrefix + string(kind) + "/" + namespace + "/" + name
}

// ApplyConfig parses the multi-document YAML in data (file names it in
// errors) and stores every resource in one raft entry, replacing resources
// with the same kind, namespace and name. A document with any error
// changes nothing and the error names the file, resource and field.
func (n *Node) ApplyConfig(ctx context.Context, file string, data []byte) (uint64, error) {
	set, err := config.Parse(file, data)
	if err != nil {
		return 0, &ValidationError{Key: file, Err: err}
	}
	docs, err := splitSet(set)
	if err != nil {
		return 0, &ValidationError{Key: file, Err: err}
	}
	if len(docs) == 0 {
		return 0, &ValidationError{Key: file, Err: errors.New("no resources")}
	}
	ops := make([]Op, 0, len(docs))
	for key, doc := range docs {
		ops = append(ops, Put(key, doc))
	}
	return n.Apply(ctx, ops...)
}

// DeleteConfig removes one config resource.
func (n *Node) DeleteConfig(ctx context.Context, kind config.Kind, namespace, name string) (uint64, error) {
	return n.Apply(ctx, Delete(ConfigKey(kind, namespace, name)))
}

// ConfigSet returns every stored config resource as one validated Set,
// from this node's state. The result is cached until config changes.
func (n *Node) ConfigSet() (*config.Set, error) {
	return n.cfgCache.get(n.fsm)
}

// splitSet renders each resource of set as its own document, keyed by
// ConfigKey.
func splitSet(set *config.Set) (map[string][]byte, error) {
	out := map[string][]byte{}
	add := func(kind config.Kind, m config.Meta, one *config.Set) error {
		doc, err := one.YAML()
		if err != nil {
			return err
		}
		out[ConfigKey(kind, m.Namespace, m.Name)] = doc
		return nil
	}
	for _, r := range set.Gateways {
		if err := add(config.KindGateway, r.Meta, &config.Set{Gateways: []*config.Gateway{r}}); err != nil {
			return nil, err
		}
	}
	for _, r := range set.VirtualServices {
		if err := add(config.KindVirtualService, r.Meta, &config.Set{VirtualServices: []*config.VirtualService{r}}); err != nil {
			return nil, err
		}
	}
	for _, r := range set.DestinationRules {
		if err := add(config.KindDestinationRule, r.Meta, &config.Set{DestinationRules: []*config.DestinationRule{r}}); err != nil {
			return nil, err
		}
	}
	for _, r := range set.ServiceEntries {
		if err := add(config.KindServiceEntry, r.Meta, &config.Set{ServiceEntries: []*config.ServiceEntry{r}}); err != nil {
			return nil, err
		}
	}
	for _, r := range set.WorkloadEntries {
		if err := add(config.KindWorkloadEntry, r.Meta, &config.Set{WorkloadEntries: []*config.WorkloadEntry{r}}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseConfigRecord parses one stored resource and checks that it is
// exactly the resource its key names.
func parseConfigRecord(key string, value []byte) (*config.Set, error) {
	set, err := config.Parse(key, value)
	if err != nil {
		return nil, err
	}
	docs, err := splitSet(set)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("holds %d resources, want exactly 1", len(docs))
	}
	for k := range docs {
		if k != key {
			return nil, fmt.Errorf("holds resource %s, not the one its key names", strings.TrimPrefix(k, ConfigPrefix))
		}
	}
	return set, nil
}

// validateConfigOps checks every config record a batch writes, alone and
// merged with the stored config (so duplicates across resources and
// conflicting Gateway servers are refused before the write).
func (n *Node) validateConfigOps(ops []Op) error {
	touched := false
	parsed := map[string]*config.Set{}
	for _, op := range ops {
		if !strings.HasPrefix(op.Key, ConfigPrefix) {
			continue
		}
		touched = true
		if op.Type == OpPut {
			s, err := parseConfigRecord(op.Key, op.Value)
			if err != nil {
				return &ValidationError{Key: op.Key, Err: err}
			}
			parsed[op.Key] = s
		}
	}
	if !touched {
		return nil
	}
	// Build the config as it would be after the batch.
	current, err := n.cfgCache.sets(n.fsm)
	if err != nil {
		// Stored config that no longer parses must not block repairs:
		// validate the batch on its own.
		current = map[string]*config.Set{}
	}
	next := make(map[string]*config.Set, len(current)+len(parsed))
	for k, s := range current {
		next[k] = s
	}
	for _, op := range ops {
		switch op.Type {
		case OpPut:
			if s, ok := parsed[op.Key]; ok {
				next[op.Key] = s
			}
		case OpDelete:
			delete(next, op.Key)
		case OpDeletePrefix:
			for k := range next {
				if strings.HasPrefix(k, op.Key) {
					delete(next, k)
				}
			}
		}
	}
	all := make([]*config.Set, 0, len(next))
	for _, s := range next {
		all = append(all, s)
	}
	if _, err := config.Merge(all...); err != nil {
		return &ValidationError{Key: ConfigPrefix, Err: err}
	}
	return nil
}

// configCache holds the parsed config records as of one applied index.
type configCache struct {
	mu     sync.Mutex // guards the fields below
	index  uint64
	valid  bool
	parsed map[string]*config.Set
	mods   map[string]uint64 // ModIndex of each parsed record
	set    *config.Set
	err    error
}

// sets returns each stored config record parsed, refreshing the cache when
// config changed. Records whose ModIndex is unchanged are not re-parsed.
func (c *configCache) sets(f *fsm) (map[string]*config.Set, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refreshLocked(f); err != nil {
		return nil, err
	}
	return c.parsed, nil
}

func (c *configCache) get(f *fsm) (*config.Set, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refreshLocked(f); err != nil {
		return nil, err
	}
	return c.set, c.err
}

func (c *configCache) refreshLocked(f *fsm) error {
	idx := f.appliedIndex()
	if c.valid && c.index == idx {
		return nil
	}
	recs := f.list(ConfigPrefix)
	parsed := make(map[string]*config.Set, len(recs))
	mods := make(map[string]uint64, len(recs))
	all := make([]*config.Set, 0, len(recs))
	var errs []error
	for _, r := range recs {
		s, ok := c.parsed[r.Key]
		if !ok || c.mods[r.Key] != r.ModIndex {
			var err error
			if s, err = parseConfigRecord(r.Key, r.Value); err != nil {
				errs = append(errs, &ValidationError{Key: r.Key, Err: err})
				continue
			}
		}
		parsed[r.Key], mods[r.Key] = s, r.ModIndex
		all = append(all, s)
	}
	c.index, c.valid, c.parsed, c.mods = idx, true, parsed, mods
	c.set, c.err = nil, errors.Join(errs...)
	if c.err == nil {
		c.set, c.err = config.Merge(all...)
	}
	return nil
}
