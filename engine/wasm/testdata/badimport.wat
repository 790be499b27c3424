;; badimport: imports a function the host does not provide, refused.
(module
  (import "env" "abort" (func (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "gw_abi_v1"))
  (func (export "gw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "gw_free") (param i32)))
