// Loaded with asc --lib: replaces AssemblyScript's `env.abort` import (the host provides no
// `env` module) with `--use abort=gwAbort`. Logs the message through gw.log, then traps, which
// the host counts as a plugin failure.

@external("gw", "log")
declare function gw_abort_log(level: i32, ptr: usize, len: i32): void;

export function gwAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const m = message === null ? "abort" : message;
  const f = fileName === null ? "?" : fileName;
  const buf = String.UTF8.encode("plugin aborted: " + m + " at " + f + ":" + line.toString() + ":" + column.toString());
  gw_abort_log(3, changetype<usize>(buf), buf.byteLength);
  unreachable();
}
