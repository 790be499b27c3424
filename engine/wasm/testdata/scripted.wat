;; scripted: a test guest whose behaviour is its config (gw.get_config).
;; The config's first byte picks it (after a '"', so "T" as a JSON string works too):
;;   T trap (unreachable)          L loop forever
;;   G grow memory until the limit, then trap
;;   S spin ~1e9 iterations, then continue
;;   O a result pointer outside memory    P proc_exit(3)
;;   Z return 0 (continue)         E log the envelope (gw.log), return 0
;;   anything else: the config itself is the result document.
;; gw_alloc is a bump allocator reset on every call (one call at a time).
(module
  (import "gw" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "gw" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "gw_abi_v1"))
  (func $ensure (param $end i32)
    (block $done
      (loop $l
        (br_if $done (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $l))))
  (func (export "gw_alloc") (param $n i32) (result i32)
    (global.set $heap (i32.add (i32.const 1024) (local.get $n)))
    (call $ensure (global.get $heap))
    (i32.const 1024))
  (func (export "gw_free") (param i32))
  (func $run (param $p i32) (param $n i32) (result i64)
    (local $len i32) (local $dst i32) (local $c i32) (local $i i32)
    (local.set $len (call $get_config (i32.const 0) (i32.const 0)))
    (local.set $dst (global.get $heap))
    (call $ensure (i32.add (local.get $dst) (local.get $len)))
    (drop (call $get_config (local.get $dst) (local.get $len)))
    (local.set $c (i32.load8_u (local.get $dst)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (local.set $c (i32.load8_u (i32.add (local.get $dst) (i32.const 1))))))
    (if (i32.eq (local.get $c) (i32.const 84)) (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 76)) (then (loop $f (br $f))))
    (if (i32.eq (local.get $c) (i32.const 71)) (then
      (loop $g (br_if $g (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
      unreachable))
    (if (i32.eq (local.get $c) (i32.const 83)) (then
      (local.set $i (i32.const 1000000000))
      (loop $s (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $s (i32.ne (local.get $i) (i32.const 0))))
      (return (i64.const 0))))
    (if (i32.eq (local.get $c) (i32.const 79)) (then (return (i64.const 0x7ffffff000000010))))
    (if (i32.eq (local.get $c) (i32.const 80)) (then (call $exit (i32.const 3)) unreachable))
    (if (i32.eq (local.get $c) (i32.const 90)) (then (return (i64.const 0))))
    (if (i32.eq (local.get $c) (i32.const 69)) (then
      (call $log (i32.const 1) (local.get $p) (local.get $n))
      (return (i64.const 0))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $dst)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "gw_on_request") (param i32 i32) (result i64) (call $run (local.get 0) (local.get 1)))
  (func (export "gw_on_response") (param i32 i32) (result i64) (call $run (local.get 0) (local.get 1)))
  (func (export "gw_on_stream_event") (param i32 i32) (result i64) (call $run (local.get 0) (local.get 1)))
  (func (export "gw_on_stream_end") (param i32 i32) (result i64) (call $run (local.get 0) (local.get 1))))
