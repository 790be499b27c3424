// Runs the SDK unit tests (test/sdk.test.ts, built by test.sh) on node.
import fs from 'node:fs';
const mod = new WebAssembly.Module(fs.readFileSync(process.argv[2]));
let inst;
const dec = new TextDecoder();
inst = new WebAssembly.Instance(mod, {
  gw: {
    log: (lvl, p, n) => console.log(dec.decode(new Uint8Array(inst.exports.memory.buffer, p, n))),
  },
});
inst.exports._initialize();
const failures = inst.exports.run();
console.log(failures === 0 ? 'sdk unit tests: ok' : `sdk unit tests: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
