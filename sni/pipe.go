package sni

// The pipes that splice(2) moves bulk bytes through.
//
// The standard library splices between TCP sockets too ((*net.TCPConn)
// .ReadFrom), with a pooled pipe, but through syscall.Syscall, which hands
// the scheduler's P to another thread whenever a splice runs long, and on
// loopback a splice of a few hundred KiB does: the receiving socket's
// softirq work runs inside it. During a bulk download through a gateway
// with one core, that meant three or four threads taking turns on the P
// and about 15,000 context switches every 3 s, against 900 for HAProxy,
// and the download reached 0.84x of a direct connection. So the pumps
// splice themselves, with non-blocking raw calls; waits for the sockets
// stay with the runtime poller.

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// splicePipe is a non-blocking pipe; it is in the pool only when empty.
type splicePipe struct {
	fds *pipeFDs
}

// pipeFDs are a pipe's two ends: read, write; -1 once closed.
type pipeFDs [2]int

// close closes both ends, once.
func (f *pipeFDs) close() {
	if f[0] >= 0 {
		_ = unix.Close(f[0])
		_ = unix.Close(f[1])
		f[0], f[1] = -1, -1
	}
}

// splicePipes holds idle pipes. One is taken for one bulk transfer and
// returned when the transfer ends, so an idle connection holds none. A
// pipe the pool drops is closed by its cleanup.
var splicePipes = sync.Pool{New: func() any {
	p, err := newSplicePipe()
	if err != nil {
		return err
	}
	return p
}}

// newSplicePipe opens a pipe sized for spliceMaxChunk when the system
// allows it (else the default 64 KiB: splices are then just shorter).
func newSplicePipe() (*splicePipe, error) {
	f := &pipeFDs{}
	if err := unix.Pipe2(f[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	_, _ = unix.FcntlInt(uintptr(f[0]), unix.F_SETPIPE_SZ, spliceMaxChunk)
	p := &splicePipe{fds: f}
	runtime.AddCleanup(p, (*pipeFDs).close, f)
	return p, nil
}

// getSplicePipe returns an empty pipe from the pool.
func getSplicePipe() (*splicePipe, error) {
	switch v := splicePipes.Get().(type) {
	case *splicePipe:
		return v, nil
	case error:
		return nil, v
	}
	return nil, errors.New("sni: splice: pipe pool returned nothing")
}

// rawSplice is splice(2) with SPLICE_F_NONBLOCK|SPLICE_F_MOVE between
// two non-blocking fds, one of them a pipe.
func rawSplice(in, out, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

// spliceSockets moves up to n bytes from the socket of src to the socket
// of dst through a pooled pipe and returns how many it moved. It waits in
// the runtime poller when the source has nothing yet (src's read deadline
// ends that wait) or the destination's send buffer is full. It stops
// early at the source's EOF. On an error the pipe is closed, not pooled,
// since it may still hold bytes; ErrDeadlineExceeded from the source
// leaves it empty.
func spliceSockets(src, dst syscall.RawConn, n int64) (moved int64, err error) {
	p, err := getSplicePipe()
	if err != nil {
		return 0, err
	}
	defer func() {
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			splicePipes.Put(p)
		}
	}()
	for moved < n {
		var k int
		var serr error
		rerr := src.Read(func(fd uintptr) bool {
			for {
				k, serr = rawSplice(int(fd), p.fds[1], int(min(n-moved, spliceMaxChunk)))
				if !errors.Is(serr, unix.EINTR) {
					return !errors.Is(serr, unix.EAGAIN)
				}
			}
		})
		if rerr != nil {
			return moved, rerr
		}
		if serr != nil {
			return moved, os.NewSyscallError("splice", serr)
		}
		if k == 0 {
			return moved, nil // EOF
		}
		for k > 0 {
			var m int
			werr := dst.Write(func(fd uintptr) bool {
				for {
					m, serr = rawSplice(p.fds[0], int(fd), k)
					if !errors.Is(serr, unix.EINTR) {
						return !errors.Is(serr, unix.EAGAIN)
					}
				}
			})
			if werr == nil && serr != nil {
				werr = os.NewSyscallError("splice", serr)
			}
			if werr != nil {
				// Bytes are lost in the pipe: the caller fails the relay.
				p.fds.close()
				return moved, werr
			}
			k -= m
			moved += int64(m)
		}
	}
	return moved, nil
}
