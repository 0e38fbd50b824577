package catalog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Keyring manages the gossip encryption keys of one node, like Consul's
// "keyring" command: every node must hold the primary key of every sender.
// To rotate: Install the new key everywhere, Use it everywhere, then
// Remove the old one. All methods are safe for concurrent use; they change
// this node only.
type Keyring struct {
	kr *memberlist.Keyring
}

// ParseKey decodes a base64 gossip key and checks its length (16, 24 or
// 32 bytes for AES-128/192/256).
func ParseKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	if err := checkKey(k); err != nil {
		return nil, err
	}
	return k, nil
}

func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("%w: %d bytes, want 16, 24 or 32", ErrKey, len(k))
}

// List returns the installed keys, base64-encoded; the primary is first.
func (k *Keyring) List() []string {
	keys := k.kr.GetKeys()
	out := make([]string, len(keys))
	for i, key := range keys {
		out[i] = base64.StdEncoding.EncodeToString(key)
	}
	return out
}

// Install adds key without making it primary.
func (k *Keyring) Install(key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := k.kr.AddKey(key); err != nil {
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	return nil
}

// Use makes an installed key the primary (the one outgoing messages use).
func (k *Keyring) Use(key []byte) error {
	if err := k.kr.UseKey(key); err != nil {
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	return nil
}

// Remove uninstalls a key that is not the primary.
func (k *Keyring) Remove(key []byte) error {
	if bytes.Equal(key, k.kr.GetPrimaryKey()) {
		return fmt.Errorf("%w: cannot remove the primary key", ErrKey)
	}
	if err := k.kr.RemoveKey(key); err != nil {
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	return nil
}

// Wire constants of memberlist v0.7 that the verifying transport needs.
const (
	mlEncryptMsg   = 10  // stream message type of an encrypted message
	mlHasLabelMsg  = 244 // label header (unused by meshgate)
	mlNonceSize    = 12
	mlTagSize      = 16
	mlMaxStateSize = 20 << 20 // memberlist's maxPushStateBytes
)

// verifyingTransport sits under memberlist and drops every packet and
// inbound stream that no installed key authenticates, counting it, before
// memberlist sees it. memberlist would drop them too, but only log it.
type verifyingTransport struct {
	inner   memberlist.NodeAwareTransport
	kr      *memberlist.Keyring
	m       *metrics
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	ctx     context.Context // canceled at Shutdown; aborts stream checks
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	aeadMu sync.Mutex // guards aeads
	aeads  map[string]cipher.AEAD
}

var _ memberlist.NodeAwareTransport = (*verifyingTransport)(nil)

func newVerifyingTransport(inner memberlist.NodeAwareTransport, kr *memberlist.Keyring, m *metrics) *verifyingTransport {
	t := &verifyingTransport{
		inner:   inner,
		kr:      kr,
		m:       m,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
		aeads:   make(map[string]cipher.AEAD),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(2)
	go t.packetLoop()
	go t.streamLoop()
	return t
}

func (t *verifyingTransport) packetLoop() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			if !t.openPacket(p.Buf) {
				t.m.drop(DropDecrypt)
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *verifyingTransport) streamLoop() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.inner.StreamCh():
			t.wg.Add(1)
			go t.checkStream(c)
		case <-t.done:
			return
		}
	}
}

// checkStream reads the first message of an inbound stream, verifies it,
// and hands memberlist a conn that replays it.
func (t *verifyingTransport) checkStream(c net.Conn) {
	defer t.wg.Done()
	defer context.AfterFunc(t.ctx, func() { c.Close() })()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:1]); err != nil {
		c.Close()
		return
	}
	var buf []byte
	switch hdr[0] {
	case mlEncryptMsg:
		if _, err := io.ReadFull(br, hdr[1:5]); err != nil {
			c.Close()
			return
		}
		n := binary.BigEndian.Uint32(hdr[1:5])
		if n > mlMaxStateSize {
			t.m.drop(DropDecrypt)
			c.Close()
			return
		}
		buf = make([]byte, 5+int(n))
		copy(buf, hdr[:5])
		if _, err := io.ReadFull(br, buf[5:]); err != nil {
			c.Close()
			return
		}
		if !t.open(buf[5:], buf[:5]) {
			t.m.drop(DropDecrypt)
			c.Close()
			return
		}
	case mlHasLabelMsg:
		// Labelled streams are left to memberlist, which refuses labels
		// it was not configured with.
		buf = hdr[:1]
	default:
		t.m.drop(DropPlaintext)
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	rc := &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf), br)}
	select {
	case t.streams <- rc:
	case <-t.done:
		c.Close()
	}
}

// openPacket authenticates a UDP packet: version(1) nonce(12) ciphertext+tag.
func (t *verifyingTransport) openPacket(b []byte) bool {
	if len(b) > 0 && b[0] == mlHasLabelMsg {
		return true // see checkStream
	}
	return t.open(b, nil)
}

func (t *verifyingTransport) open(msg, aad []byte) bool {
	if len(msg) < 1+mlNonceSize+mlTagSize || msg[0] > 1 {
		return false
	}
	nonce, ct := msg[1:1+mlNonceSize], msg[1+mlNonceSize:]
	for _, key := range t.kr.GetKeys() {
		aead := t.aead(key)
		if aead == nil {
			continue
		}
		if _, err := aead.Open(nil, nonce, ct, aad); err == nil {
			return true
		}
	}
	return false
}

func (t *verifyingTransport) aead(key []byte) cipher.AEAD {
	t.aeadMu.Lock()
	defer t.aeadMu.Unlock()
	if a, ok := t.aeads[string(key)]; ok {
		return a
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil
	}
	if len(t.aeads) > 16 {
		clear(t.aeads) // keys rotated many times: start over
	}
	t.aeads[string(key)] = a
	return a
}

func (t *verifyingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}
func (t *verifyingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.inner.WriteTo(b, addr)
}
func (t *verifyingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.inner.WriteToAddress(b, a)
}
func (t *verifyingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *verifyingTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return t.inner.DialTimeout(addr, d)
}
func (t *verifyingTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	return t.inner.DialAddressTimeout(a, d)
}
func (t *verifyingTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the inner transport first (memberlist still reads while
// it does, so its listeners never block), then the loops, and waits.
func (t *verifyingTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		err = t.inner.Shutdown()
		t.cancel()
		close(t.done)
		t.wg.Wait()
	})
	return err
}

// replayConn reads r (the verified first message, then the rest) before
// reading the conn directly.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
