// Host functions (ABI §2), imported from module "gw". A function is imported only when used.

@external("gw", "log")
declare function gw_log(level: i32, ptr: usize, len: i32): void;

@external("gw", "get_config")
declare function gw_get_config(buf: usize, limit: i32): i32;

export enum Level {
  Debug = 0,
  Info = 1,
  Warn = 2,
  Error = 3,
}

/** Writes a line to the gateway log (cut at 4 KiB by the host). */
export function log(level: Level, msg: string): void {
  const buf = String.UTF8.encode(msg);
  gw_log(level, changetype<usize>(buf), buf.byteLength);
}

export function debug(msg: string): void {
  log(Level.Debug, msg);
}
export function info(msg: string): void {
  log(Level.Info, msg);
}
export function warn(msg: string): void {
  log(Level.Warn, msg);
}
export function error(msg: string): void {
  log(Level.Error, msg);
}

/** The plugin's config JSON via gw.get_config (null when none). Most plugins export gw_on_config instead. */
export function getConfig(): string | null {
  const n = gw_get_config(0, 0);
  if (n <= 0) return null;
  const buf = new ArrayBuffer(n);
  if (gw_get_config(changetype<usize>(buf), n) != n) return null;
  return String.UTF8.decode(buf);
}
