// Golden-case runner for Portcullis plugins (any guest language) on node's WebAssembly engine:
//   node sdk/assemblyscript/tools/golden.mjs plugin.wasm testdata/*.json
// A case is {"config":..., "hook":"on_request", "input":{envelope}, "expect":{result} | null}; for
// "hook":"on_config" the result of gw_on_config is compared. Results compare as JSON values;
// null (continue) matches a 0 return or {"action":"continue"}. Each case runs in a fresh instance:
// _initialize, gw_on_config(config), then the hook. The gateway's own host (wazero) is the
// reference; this runner needs only node, for quick checks while writing a plugin.
import fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
const [wasmPath, ...cases] = process.argv.slice(2);
if (!wasmPath || cases.length === 0) {
  console.error('usage: node golden.mjs plugin.wasm case.json...');
  process.exit(2);
}
const mod = new WebAssembly.Module(fs.readFileSync(wasmPath));
let pass = 0, fail = 0;
function instantiate(configText) {
  let inst;
  const mem = () => new Uint8Array(inst.exports.memory.buffer);
  const enc = new TextEncoder(), dec = new TextDecoder();
  const imports = {
    gw: {
      log: (lvl, p, n) => console.error(`  [log ${lvl}] ${dec.decode(mem().subarray(p, p + n))}`),
      get_config: (buf, limit) => { const b = enc.encode(configText); if (b.length <= limit) mem().set(b, buf); return b.length; },
    },
    wasi_snapshot_preview1: new Proxy({}, { get: (_, name) => (...a) => { if (name === 'proc_exit') throw new Error('proc_exit'); return 52; } }),
  };
  // Like the gateway, provide only gw.* and WASI (stubbed): any other import is an error.
  for (const imp of WebAssembly.Module.imports(mod)) {
    if (!imports[imp.module] || (imp.module === 'gw' && !imports.gw[imp.name])) throw new Error('unexpected import ' + imp.module + '.' + imp.name);
  }
  inst = new WebAssembly.Instance(mod, imports);
  const x = inst.exports;
  if (!x.gw_abi_v1 || !x.gw_alloc || !x.gw_free || !x.memory) throw new Error('missing required export');
  if (x._start && !x._initialize) throw new Error('command module (_start without _initialize)');
  if (x._initialize) x._initialize();
  const call = (hook, text) => {
    const fn = x['gw_' + hook];
    if (!fn) return undefined;
    const b = enc.encode(text);
    const p = x.gw_alloc(b.length);
    if (!p) throw new Error('gw_alloc failed');
    mem().set(b, p);
    const r = BigInt.asUintN(64, fn(p, b.length));
    if (r === 0n) return null;
    const rp = Number(r >> 32n), rl = Number(r & 0xffffffffn);
    const out = dec.decode(mem().slice(rp, rp + rl));
    x.gw_free(rp);
    return JSON.parse(out);
  };
  return { call, x };
}
for (const file of cases) {
  const c = JSON.parse(fs.readFileSync(file, 'utf8'));
  const cfgText = JSON.stringify(c.config === undefined ? null : c.config);
  try {
    const { call } = instantiate(cfgText);
    const cr = call('on_config', cfgText);
    let got;
    if (c.hook === 'on_config') got = cr === undefined ? null : cr;
    else {
      if (cr && cr.action === 'error') throw new Error('on_config failed: ' + JSON.stringify(cr));
      got = call(c.hook, JSON.stringify(c.input));
      if (got === undefined) throw new Error('hook not exported: ' + c.hook);
    }
    const norm = (v) => (v && v.action === 'continue' && Object.keys(v).length === 1 ? null : v);
    if (isDeepStrictEqual(norm(got), norm(c.expect ?? null))) pass++;
    else { fail++; console.log(`FAIL ${file}\n  got    ${JSON.stringify(got)}\n  expect ${JSON.stringify(c.expect)}`); }
  } catch (e) { fail++; console.log(`FAIL ${file}: ${e.stack}`); }
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
