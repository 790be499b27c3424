;; v2only: exports only a future ABI marker, refused at load.
(module
  (memory (export "memory") 1)
  (func (export "gw_abi_v2"))
  (func (export "gw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "gw_free") (param i32)))
