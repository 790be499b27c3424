// gw-sdk for AssemblyScript: Portcullis plugin ABI v1 (see sdk/ABI.md).
//
// A plugin's entry file re-exports the ABI plumbing and exports the hooks it implements (exporting
// a hook subscribes to it):
//
//   import { Envelope, Output, Value, handle, handleConfig } from "../../sdk/assemblyscript/assembly";
//   export { gw_abi_v1, gw_alloc, gw_free } from "../../sdk/assemblyscript/assembly";
//   export function gw_on_request(ptr: usize, len: usize): u64 { return handle(ptr, len, onRequest); }

export { Kind, Value, ByteBuf, parse, parseBytes, lastError, writeValue, writeString, writeNumber, MAX_DEPTH } from "./json";
export { Json, Members, skipValue, skipWs, scanString, bytesEqual } from "./view";
export { Envelope, Text, bodyTexts } from "./envelope";
export { Output } from "./output";
export { gw_abi_v1, gw_alloc, gw_free, handle, handleConfig } from "./abi";
export * from "./host";
