//! Host functions (ABI §2), imported from module `gw`. A function is imported only when the plugin
//! uses it. Outside wasm32 (native unit tests of a plugin), `log` writes to stderr and
//! `get_config` reports no config.

/// Log levels of `gw.log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "gw")]
    extern "C" {
        #[link_name = "log"]
        pub fn gw_log(level: i32, ptr: *const u8, len: i32);
        #[link_name = "get_config"]
        pub fn gw_get_config(buf: *mut u8, limit: i32) -> i32;
    }
}

/// Writes a line to the gateway log (cut at 4 KiB by the host).
pub fn log(level: Level, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        imports::gw_log(level as i32, msg.as_ptr(), msg.len() as i32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{:?}] {}", level, msg);
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

pub fn info(msg: &str) {
    log(Level::Info, msg)
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// The plugin's config JSON, fetched with `gw.get_config` (the same text `gw_on_config` receives).
/// Most plugins should export `on_config` instead; this is for plugins that read it lazily.
pub fn get_config() -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        let n = imports::gw_get_config(std::ptr::null_mut(), 0);
        if n <= 0 {
            return None;
        }
        let mut buf = vec![0u8; n as usize];
        let m = imports::gw_get_config(buf.as_mut_ptr(), n);
        if m != n {
            return None;
        }
        String::from_utf8(buf).ok()
    }
    #[cfg(not(target_arch = "wasm32"))]
    None
}
