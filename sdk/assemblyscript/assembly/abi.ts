// ABI plumbing: the marker, the allocator exports and the hook dispatchers.
//
// Memory: buffers exchanged with the host (input envelopes, result documents) are unmanaged
// blocks from heap.alloc/heap.free, which the garbage collector never moves or frees, so no
// __pin/__unpin is needed. Build with `--runtime minimal`: the SDK runs a full collection
// (__collect) at the end of every hook call, when no managed object is live on the stack, so an
// instance's heap stays at its config's size however many calls it serves.

import { lastError, parseBytes, ByteBuf, Value } from "./json";
import { Envelope } from "./envelope";
import { Output } from "./output";

/** ABI v1 marker; never called. Re-export it from the plugin's entry file. */
export function gw_abi_v1(): void {}

/** Returns `size` writable bytes for the host. */
export function gw_alloc(size: usize): usize {
  return heap.alloc(size);
}

/** Frees an input buffer or a result document. */
export function gw_free(ptr: usize): void {
  if (ptr != 0) heap.free(ptr);
}

function finish(out: Output | null): u64 {
  let r: u64 = 0;
  if (out !== null && !out.isNoop()) {
    const buf = new ByteBuf(256);
    out.write(buf);
    // The host copies the document out, then frees it with gw_free.
    r = (<u64>buf.ptr << 32) | <u64>buf.len;
  }
  __collect();
  return r;
}

/**
 * Runs a hook: gives `fn` a lazy view of the host's envelope at ptr/len, frees the buffer after
 * `fn` returns, and returns the packed result (0 for null / a no-op Output).
 */
export function handle(ptr: usize, len: usize, fn: (env: Envelope) => Output | null): u64 {
  const out = fn(Envelope.at(ptr, len));
  gw_free(ptr);
  return finish(out);
}

/** Runs gw_on_config: `fn` receives the config value itself (a null Value when there is none). */
export function handleConfig(ptr: usize, len: usize, fn: (cfg: Value) => Output | null): u64 {
  const v = parseBytes(ptr, len);
  gw_free(ptr);
  if (v === null) return finish(Output.error("gw-sdk: config: " + lastError));
  return finish(fn(v));
}
