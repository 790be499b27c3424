// Example plugin (the one in README.md): routes requests tagged `tag` to `model`, and rejects
// requests with the header x-block: 1. Config: {"tag":"batch","model":"gpt-4o-mini"}.
import { Envelope, Output, Value, handle, handleConfig } from "../assembly";
export { gw_abi_v1, gw_alloc, gw_free } from "../assembly";

let tag = "";
let model = "";

function configure(cfg: Value): Output | null {
  const t = cfg.getString("tag");
  const m = cfg.getString("model");
  if (t === null || m === null) return Output.error("example: config needs tag and model");
  tag = t;
  model = m;
  return null;
}

function onRequest(env: Envelope): Output | null {
  if (env.headerIs("x-block", "1")) return Output.reject(403, "blocked", "blocked by example");
  if (env.hasTag(tag) && env.servesModel(model)) return Output.route(model).label("example:routed");
  return null; // continue, no changes
}

// Exporting a hook subscribes the plugin to it.
export function gw_on_config(ptr: usize, len: usize): u64 {
  return handleConfig(ptr, len, configure);
}
export function gw_on_request(ptr: usize, len: usize): u64 {
  return handle(ptr, len, onRequest);
}
