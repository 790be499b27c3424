;; command: a command module (_start, no _initialize), refused at load.
(module
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "gw_abi_v1"))
  (func (export "gw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "gw_free") (param i32)))
