package sni

// Detached relays: idle sockets outside the runtime poller.
//
// Every fd the runtime poller knows has a pollDesc: 280 bytes, which the
// runtime pads to 512, allocates off the Go heap and never gives back to
// the OS (a closed socket's pollDesc waits in a free list for the next
// one). An idle proxied connection thus held 1 KiB for its two sockets,
// more than its relay, its buffers-free pumps and its socket objects
// together, and a fill of 10,000 connections kept 10 MB after they closed.
//
// A crowded splicer (more live relays than spliceCrowd) therefore takes a
// quiet relay's sockets out of the runtime poller: it duplicates both fds,
// takes the originals out of its own epoll set, closes them (the runtime
// drops its registrations and frees their pollDescs; the sockets stay
// open through the duplicates), and registers the duplicates in its epoll
// set. A relay is detached when it starts in a crowded splicer and when
// its last running pump hands its direction to epoll there.
//
// A wake-up of a detached relay is served on the raw fds (rawPump): the
// bytes queued at the source are read and written on without waiting,
// an EOF is passed on as a half-close, and the direction is re-armed, so a
// handshake flight or a request costs no more system calls than on an
// attached relay. Only what must wait (a destination whose send buffer is
// full, a burst that fills the buffer and goes on by splice) or must be
// judged on the sockets (an I/O error) attaches the relay again: each fd
// becomes a sockConn in the runtime poller, under the same fd numbers, so
// the epoll registrations stay as they are.
//
// Raw fds can be reused by the kernel once closed, so every call on them
// holds the relay's fdmu shared, and close, detach and attach hold it
// exclusively.

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// detachLocked moves r's sockets out of the runtime poller and arms both
// directions in the splicer's epoll set on the duplicated fds; self is the
// direction whose pump calls it (nil when the relay starts), which must be
// the only pump running. It reports false, with nothing changed, when r
// cannot be detached: a socket is not TCP, a direction finished, another
// pump runs, or an fd could not be duplicated. An error means the relay is
// broken and must be closed. r.fdmu must be held exclusively.
func (r *spliceRelay) detachLocked(self *spliceDir) (bool, error) {
	want := int32(1) // the relay's own reference
	if self != nil {
		want++ // and the calling pump's
	}
	if r.detached.Load() || r.closed.Load() || r.eofs.Load() != 0 || r.refs.Load() != want ||
		!tcpSocket(r.client) || !tcpSocket(r.upstream) || r.rx.raw == nil || r.tx.raw == nil {
		return false, nil
	}
	cfd, err := dupSocket(r.rx.raw)
	if err != nil {
		return false, nil
	}
	ufd, err := dupSocket(r.tx.raw)
	if err != nil {
		_ = unix.Close(cfd)
		return false, nil
	}
	// The originals leave the splicer's epoll set while still open; a
	// direction never registered yet has nothing to remove.
	for _, d := range []*spliceDir{&r.rx, &r.tx} {
		if d.watched.Load() {
			_ = r.sp.ctlRaw(d.raw, unix.EPOLL_CTL_DEL, 0)
		}
	}
	_ = r.client.Close()
	_ = r.upstream.Close()
	r.client, r.upstream, r.rx.raw, r.tx.raw = nil, nil, nil, nil
	r.cfd, r.ufd = int32(cfd), int32(ufd)
	r.detached.Store(true)
	if self != nil {
		self.running.Store(false)
	}
	for _, d := range []*spliceDir{&r.rx, &r.tx} {
		d.watched.Store(true)
		if err := r.sp.ctlFD(d.fd(), unix.EPOLL_CTL_ADD, d.token()); err != nil {
			return true, err
		}
	}
	return true, nil
}

// attach hands a detached relay's sockets back to the runtime poller. It
// reports false when the relay was closed.
func (r *spliceRelay) attach() bool {
	r.fdmu.Lock()
	defer r.fdmu.Unlock()
	if r.closed.Load() {
		return false
	}
	if !r.detached.Load() {
		return true
	}
	// A non-blocking socket: os.NewFile registers it with the poller.
	c := &sockConn{f: os.NewFile(uintptr(r.cfd), sockFileName)}
	u := &sockConn{f: os.NewFile(uintptr(r.ufd), sockFileName)}
	r.client, r.upstream, r.rx.raw, r.tx.raw = c, u, rawOf(c), rawOf(u)
	r.detached.Store(false)
	return true
}

// fd is d's source fd while the relay is detached.
func (d *spliceDir) fd() int {
	if d.rx {
		return int(d.r.cfd)
	}
	return int(d.r.ufd)
}

// dstFD is d's destination fd while the relay is detached.
func (d *spliceDir) dstFD() int {
	if d.rx {
		return int(d.r.ufd)
	}
	return int(d.r.cfd)
}

// rawPump serves a wake-up of a detached relay on its raw fds: it moves
// what the source has queued, passes an EOF on, and re-arms the direction.
// done is false when the relay is attached (it was, or rawPump attached
// it): the caller goes on with the pollable sockets, first writing
// pending (held in bp, from spliceBufs) when rawPump left some.
func (d *spliceDir) rawPump() (bp *[]byte, pending []byte, done bool) {
	r := d.r
	r.fdmu.RLock()
	if !r.detached.Load() {
		r.fdmu.RUnlock()
		return nil, nil, false
	}
	src, dst := d.fd(), d.dstFD()
	var rerr, werr error
	eof, full := false, false
	for {
		if bp == nil {
			bp = spliceBufs.Get().(*[]byte)
		}
		var m int
		m, rerr = rawReadRetry(src, *bp)
		if errors.Is(rerr, unix.EAGAIN) {
			rerr = nil
			break // drained
		}
		if rerr != nil || m == 0 {
			eof = rerr == nil
			break
		}
		r.lastActive.Store(r.sp.now())
		w, err := rawWriteSome(dst, (*bp)[:m])
		d.count(int64(w))
		if err != nil {
			werr = err
			break
		}
		if w < m {
			pending = (*bp)[w:m]
			break
		}
		if m == len(*bp) {
			full = true
			break
		}
	}
	if pending == nil {
		spliceBufs.Put(bp)
		bp = nil
	}
	switch {
	case rerr == nil && werr == nil && !eof && !full && pending == nil:
		d.running.Store(false)
		err := r.sp.ctlFD(src, unix.EPOLL_CTL_MOD, d.token())
		r.fdmu.RUnlock()
		if err != nil {
			r.close(closeError)
		}
		return nil, nil, true
	case eof:
		both := d.markEOF()
		var serr error
		if !both {
			serr = rawShutdownWrite(dst)
		}
		r.fdmu.RUnlock()
		switch {
		case both:
			r.close(closeEOF)
		case serr != nil && r.attach():
			r.fail(d.dst(), os.NewSyscallError("shutdown", serr))
		}
		return nil, nil, true
	}
	r.fdmu.RUnlock()
	if !r.attach() {
		if bp != nil {
			spliceBufs.Put(bp)
		}
		return nil, nil, true
	}
	switch {
	case rerr != nil:
		r.fail(d.src(), os.NewSyscallError("read", rerr))
		return nil, nil, true
	case werr != nil:
		r.fail(d.dst(), werr)
		return nil, nil, true
	}
	return bp, pending, false // full or pending: go on attached
}

// rawWriteSome writes what of p fd takes without waiting.
func rawWriteSome(fd int, p []byte) (int, error) {
	w := 0
	for w < len(p) {
		k, err := rawWrite(fd, p[w:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return w, nil
		case err != nil:
			return w, os.NewSyscallError("write", err)
		}
		w += k
	}
	return w, nil
}

// evict ends the runtime-poller waits of r's parked pumps (a past read
// deadline), so they hand their directions to epoll.
func (r *spliceRelay) evict() {
	r.fdmu.RLock()
	defer r.fdmu.RUnlock()
	if r.detached.Load() {
		return
	}
	for _, d := range []*spliceDir{&r.rx, &r.tx} {
		if d.parked.Load() {
			_ = d.src().SetReadDeadline(spliceLongAgo) // wakes park
		}
	}
}

// dupSocket duplicates rc's fd (close-on-exec).
func dupSocket(rc syscall.RawConn) (int, error) {
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return nfd, nil
}

// ctlRaw applies epoll_ctl op to rc's fd, holding it open meanwhile.
func (s *splicer) ctlRaw(rc syscall.RawConn, op int, token uint64) error {
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = s.ctlFD(int(fd), op, token) }); err != nil {
		return err
	}
	return cerr
}

// ctlFD applies epoll_ctl op to fd in the splicer's set: for ADD and MOD,
// one readiness event (EPOLLIN, EPOLLRDHUP, EPOLLONESHOT) carrying token.
// The caller keeps fd open.
func (s *splicer) ctlFD(fd, op int, token uint64) error {
	var ctlErr error
	err := s.raw.Control(func(epfd uintptr) {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd:     int32(uint32(token)),
			Pad:    int32(uint32(token >> 32)),
		}
		ctlErr = unix.EpollCtl(int(epfd), op, fd, &ev)
	})
	if err != nil {
		return fmt.Errorf("sni: splice: epoll fd: %w", err)
	}
	if ctlErr != nil {
		return fmt.Errorf("sni: splice: epoll_ctl: %w", ctlErr)
	}
	return nil
}
