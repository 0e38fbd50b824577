package pki

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"
)

// rotationMargin is added to the retirement time of a previous root, on
// top of the longest leaf lifetime, to cover nodes that keep signing with
// it until they reload.
const rotationMargin = time.Hour

// Rotate replaces a self-signed root: it makes a new root (same algorithm,
// subject and lifetime as configured), cross-signs it with the current
// root, and from then on signs with the new root. The trust bundle serves
// both roots until every leaf of the old one has expired (now + MaxTTL +
// Backdate + 1h); until then leaf chains carry the cross-signed
// certificate, so peers that still trust only the old root accept new
// leaves. After that time, Reload drops the old root and the cross
// certificate. A plug-in CA cannot be rotated here (replace its files),
// and only one rotation may be in progress. Other nodes pick the new root
// up with Reload.
func (ca *CA) Rotate(ctx context.Context) error {
	ca.rotMu.Lock()
	defer ca.rotMu.Unlock()
	cur := ca.state.Load()
	now := ca.now()
	if cur.source != sourceSelfSigned {
		return fmt.Errorf("%w: the CA is a plug-in CA; replace its files in %s instead", ErrRotation, ca.cfg.PluginDir)
	}
	for _, t := range cur.retire {
		if now.Before(t) {
			return fmt.Errorf("%w: a previous rotation is in progress until %s", ErrRotation, t.Format(time.RFC3339))
		}
	}
	key, root, err := newSelfSignedRoot(ca.cfg, now)
	if err != nil {
		return err
	}
	cross, err := crossSign(root, cur.root, cur.key)
	if err != nil {
		return err
	}
	prev := []prevRoot{{Cert: certPEM(cur.root), RetireAfter: now.Add(ca.cfg.MaxTTL + ca.cfg.Backdate + rotationMargin).UTC()}}
	raw, err := sealState(ca.kek, key, sourceSelfSigned, now, root, []*x509.Certificate{cross}, root, prev)
	if err != nil {
		return err
	}
	st, err := openState(raw, ca.kek, now)
	if err != nil {
		return err
	}
	if err := put(ctx, ca.store, keyState, raw); err != nil {
		return fmt.Errorf("pki: store CA state: %w", err)
	}
	ca.state.Store(st)
	ca.log.Info("root rotated", "old_serial", cur.root.SerialNumber.Text(16), "new_serial", root.SerialNumber.Text(16),
		"old_root_retires", prev[0].RetireAfter)
	return nil
}
