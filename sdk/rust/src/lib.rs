//! gw_sdk: the Rust guest SDK for Portcullis plugins (plugin ABI v1, see `sdk/ABI.md`).
//!
//! Linking this crate into a `cdylib` exports the ABI plumbing (`gw_abi_v1`, `gw_alloc`,
//! `gw_free`). A plugin exports the hooks it implements, and only those (exporting a hook
//! subscribes to it), with [`plugin!`] or the one-hook macros ([`on_request!`], ...):
//!
//! ```ignore
//! use gw_sdk::{Envelope, Output, Value};
//!
//! fn config(cfg: &Value) -> Result<(), String> { /* parse, keep in a gw_sdk::Global */ Ok(()) }
//! fn request(env: &Envelope) -> Option<Output> {
//!     // Envelope fields are read lazily from the host's buffer: only what is asked for is parsed.
//!     if env.has_tag("batch") { Some(Output::route("gpt-4o-mini")) } else { None }
//! }
//! gw_sdk::plugin! { on_config: config, on_request: request }
//! ```
//!
//! No external crates; builds with rustc 1.63 (Debian 12) for `wasm32-unknown-unknown`
//! (recommended: no WASI imports, smallest module) or `wasm32-wasi`. A panic traps, which the
//! host counts as a plugin failure; the SDK logs the panic message through `gw.log` first.

pub mod envelope;
pub mod host;
pub mod json;
pub mod output;
pub mod view;

pub use envelope::{body_texts, Envelope, Text};
pub use json::{ParseError, Value};
pub use output::{IntoOutput, Output};
pub use view::{Json, Kind};

use std::sync::Mutex;

/// The ABI v1 marker export. Never called.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn gw_abi_v1() {}

/// Bytes before each buffer handed out by `gw_alloc`, holding its size (so `gw_free` needs no size).
const HEADER: usize = 8;

/// Allocates `size` bytes for the host (0 on failure). Also used for result documents, so the host
/// frees both with `gw_free`.
pub fn alloc_buffer(size: usize) -> *mut u8 {
    let total = match size.checked_add(HEADER) {
        Some(t) if size <= u32::MAX as usize => t,
        _ => return std::ptr::null_mut(),
    };
    let layout = match std::alloc::Layout::from_size_align(total, HEADER) {
        Ok(l) => l,
        Err(_) => return std::ptr::null_mut(),
    };
    unsafe {
        let base = std::alloc::alloc(layout);
        if base.is_null() {
            return base;
        }
        (base as *mut usize).write(size);
        base.add(HEADER)
    }
}

/// Frees a buffer from [`alloc_buffer`] (null is ignored).
///
/// # Safety
/// `ptr` must come from `alloc_buffer` and not have been freed.
pub unsafe fn free_buffer(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    let base = ptr.sub(HEADER);
    let size = (base as *const usize).read();
    std::alloc::dealloc(base, std::alloc::Layout::from_size_align_unchecked(size + HEADER, HEADER));
}

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn gw_alloc(size: u32) -> u32 {
    alloc_buffer(size as usize) as u32
}

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn gw_free(ptr: u32) {
    free_buffer(ptr as *mut u8)
}

/// A value set once (typically in `on_config`) and read by the hooks: a `static` cell usable
/// without `unsafe` (std's OnceCell needs Rust 1.70; this SDK targets 1.63).
///
/// ```ignore
/// static CONFIG: gw_sdk::Global<Config> = gw_sdk::Global::new();
/// CONFIG.set(cfg);
/// CONFIG.with(|cfg| cfg.rules.len());
/// ```
pub struct Global<T> {
    cell: Mutex<Option<T>>,
}

impl<T> Global<T> {
    pub const fn new() -> Global<T> {
        Global { cell: Mutex::new(None) }
    }

    /// Stores the value (replacing any earlier one).
    pub fn set(&self, value: T) {
        *self.lock() = Some(value);
    }

    /// Removes and returns the value.
    pub fn take(&self) -> Option<T> {
        self.lock().take()
    }

    /// Runs `f` on the value; None when it was never set. Do not call `set` from inside `f`
    /// (that traps: the cell is locked).
    pub fn with<R, F: FnOnce(&T) -> R>(&self, f: F) -> Option<R> {
        self.lock().as_ref().map(f)
    }

    /// Like [`Global::with`], with mutable access.
    pub fn with_mut<R, F: FnOnce(&mut T) -> R>(&self, f: F) -> Option<R> {
        self.lock().as_mut().map(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<Option<T>> {
        match self.cell.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Runs a hook on an input envelope and returns its result document (`None` for a no-op
/// continue). This is what the exported hooks do between reading the input buffer and writing
/// the result; plugins can call it in native tests.
pub fn run_hook<R: IntoOutput, F: FnOnce(&Envelope) -> R>(input: &[u8], f: F) -> Option<String> {
    finish(f(&Envelope::new(input)).into_output())
}

/// Like [`run_hook`] for `on_config`, whose input is the config value itself, parsed in full
/// (an input that is not valid JSON gives an `error` result).
pub fn run_config_hook<R: IntoOutput, F: FnOnce(&Value) -> R>(input: &[u8], f: F) -> Option<String> {
    finish(match Value::parse_bytes(input) {
        Ok(v) => f(&v).into_output(),
        Err(e) => Output::error(&format!("gw_sdk: config: {}", e)),
    })
}

fn finish(out: Output) -> Option<String> {
    if out.is_noop() {
        None
    } else {
        Some(out.to_json())
    }
}

#[doc(hidden)]
pub mod __private {
    #[allow(unused_imports)]
    use super::*;

    #[cfg(target_arch = "wasm32")]
    fn install_panic_logger() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DONE: AtomicBool = AtomicBool::new(false);
        if !DONE.swap(true, Ordering::Relaxed) {
            std::panic::set_hook(Box::new(|info| host::error(&format!("plugin panicked: {}", info))));
        }
    }

    /// Reads the host's input buffer, frees it, runs `f`, and hands the result back packed.
    #[cfg(target_arch = "wasm32")]
    pub fn dispatch<F: FnOnce(&[u8]) -> Option<String>>(ptr: u32, len: u32, f: F) -> u64 {
        install_panic_logger();
        let result = {
            let input: &[u8] =
                if ptr == 0 { &[] } else { unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) } };
            f(input)
        };
        unsafe { free_buffer(ptr as *mut u8) };
        match result {
            None => 0,
            Some(doc) => {
                let p = alloc_buffer(doc.len());
                if p.is_null() {
                    std::process::abort();
                }
                unsafe { std::ptr::copy_nonoverlapping(doc.as_ptr(), p, doc.len()) };
                ((p as u32 as u64) << 32) | doc.len() as u64
            }
        }
    }
}

/// Exports `gw_on_config`: `fn(&Value) -> R` receives the plugin's config (`null` when none).
/// `R` is `()`, `Output`, `Option<Output>` or a `Result` (an `Err` fails the instance).
#[macro_export]
macro_rules! on_config {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn gw_on_config(ptr: u32, len: u32) -> u64 {
            $crate::__private::dispatch(ptr, len, |input| $crate::run_config_hook(input, $f))
        }
        // Natively (unit tests) the handler is only referenced, not exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
    };
}

/// Exports `gw_on_request`: `fn(&Envelope) -> R`, see [`IntoOutput`].
#[macro_export]
macro_rules! on_request {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn gw_on_request(ptr: u32, len: u32) -> u64 {
            $crate::__private::dispatch(ptr, len, |input| $crate::run_hook(input, $f))
        }
        // Natively (unit tests) the handler is only referenced, not exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
    };
}

/// Exports `gw_on_response`: `fn(&Envelope) -> R`.
#[macro_export]
macro_rules! on_response {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn gw_on_response(ptr: u32, len: u32) -> u64 {
            $crate::__private::dispatch(ptr, len, |input| $crate::run_hook(input, $f))
        }
        // Natively (unit tests) the handler is only referenced, not exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
    };
}

/// Exports `gw_on_stream_event`: `fn(&Envelope) -> R`.
#[macro_export]
macro_rules! on_stream_event {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn gw_on_stream_event(ptr: u32, len: u32) -> u64 {
            $crate::__private::dispatch(ptr, len, |input| $crate::run_hook(input, $f))
        }
        // Natively (unit tests) the handler is only referenced, not exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
    };
}

/// Exports `gw_on_stream_end`: `fn(&Envelope) -> R`.
#[macro_export]
macro_rules! on_stream_end {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn gw_on_stream_end(ptr: u32, len: u32) -> u64 {
            $crate::__private::dispatch(ptr, len, |input| $crate::run_hook(input, $f))
        }
        // Natively (unit tests) the handler is only referenced, not exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $f;
        };
    };
}

/// Exports the listed hooks: `gw_sdk::plugin! { on_config: cfg, on_request: req }`.
/// Hook names: on_config, on_request, on_response, on_stream_event, on_stream_end.
#[macro_export]
macro_rules! plugin {
    ($($hook:ident : $f:path),* $(,)?) => {
        $( $crate::$hook!($f); )*
    };
}

#[cfg(test)]
mod tests;
