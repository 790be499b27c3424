//go:build wasip1

package portcullis

import (
	"unsafe"
)

// Buffers handed to the host. The input and the result buffers are
// reused from call to call (one call at a time per instance); other
// allocations are kept in live until the host frees them. Go's collector
// does not move objects, so addresses stay valid while referenced.
var (
	inBuf, outBuf   []byte
	inBusy, outBusy bool
	live            = map[uint32][]byte{}
)

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

//go:wasmexport gw_abi_v1
func gwABIv1() {}

//go:wasmexport gw_alloc
func gwAlloc(size uint32) uint32 {
	size = max(size, 1)
	if !inBusy {
		if uint32(cap(inBuf)) < size {
			inBuf = make([]byte, max(size, 4096))
		}
		inBusy = true
		return addr(inBuf[:cap(inBuf)])
	}
	b := make([]byte, size)
	p := addr(b)
	live[p] = b
	return p
}

//go:wasmexport gw_free
func gwFree(p uint32) {
	switch {
	case inBusy && p == addr(inBuf[:cap(inBuf)]):
		inBusy = false
	case outBusy && p == addr(outBuf[:cap(outBuf)]):
		outBusy = false
	default:
		delete(live, p)
	}
}

// buffer returns the n bytes at p, a buffer from gw_alloc.
func buffer(p, n uint32) []byte {
	if inBusy && p == addr(inBuf[:cap(inBuf)]) {
		return inBuf[:min(int(n), cap(inBuf))]
	}
	b := live[p]
	return b[:min(int(n), len(b))]
}

// call runs a hook on the envelope at p (which it frees) and hands the
// result to the host.
func call(hook string, p, n uint32) uint64 {
	in := buffer(p, n)
	var dst []byte
	if !outBusy {
		dst = outBuf[:0]
	}
	out := dispatch(hook, in, dst)
	gwFree(p)
	if len(out) == 0 {
		return 0
	}
	op := addr(out)
	if !outBusy && (cap(outBuf) == 0 || op == addr(outBuf[:cap(outBuf)]) || cap(out) > cap(outBuf)) {
		outBuf, outBusy = out[:0], true
		op = addr(outBuf[:cap(outBuf)])
	} else {
		live[op] = out
	}
	return uint64(op)<<32 | uint64(uint32(len(out)))
}

//go:wasmexport gw_on_config
func gwOnConfig(p, n uint32) uint64 { return call(HookConfig, p, n) }

//go:wasmexport gw_on_request
func gwOnRequest(p, n uint32) uint64 { return call(HookRequest, p, n) }

//go:wasmexport gw_on_response
func gwOnResponse(p, n uint32) uint64 { return call(HookResponse, p, n) }

//go:wasmexport gw_on_stream_event
func gwOnStreamEvent(p, n uint32) uint64 { return call(HookStreamEvent, p, n) }

//go:wasmexport gw_on_stream_end
func gwOnStreamEnd(p, n uint32) uint64 { return call(HookStreamEnd, p, n) }

//go:wasmimport gw log
func hostLog(level int32, ptr unsafe.Pointer, n uint32)

// Log writes a line to the gateway log: level 0 debug, 1 info, 2 warn,
// 3 error. Lines are cut at 4 KiB.
func Log(level int, msg string) {
	if msg == "" {
		return
	}
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}
