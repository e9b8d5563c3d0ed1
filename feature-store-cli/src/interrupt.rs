//! Ctrl-C and `kill` while an output file is being written: the hidden
//! partial file is removed before the process exits, and partial files that
//! a killed run (SIGKILL, a crash) left behind are swept by the next run
//! writing the same output.
//!
//! The signal handler only loads a pointer, unlinks and exits, all
//! async-signal-safe; the path is kept ready as a C string beforehand.

#![allow(unsafe_code)] // a signal handler: libc calls, each with its SAFETY note

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

static PARTIAL: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Installs the SIGINT and SIGTERM handler and ignores SIGXFSZ; call first in `main`.
pub(crate) fn install() {
    #[cfg(unix)]
    // SAFETY: called in main before any thread exists; the handler is async-signal-safe.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
        // Past a file size limit, a write then fails with EFBIG, which is
        // reported with the file's name, instead of killing the process.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Gives SIGINT and SIGTERM back to their default action, for a command
/// (`serve`) that handles them itself through tokio to shut down gracefully.
pub(crate) fn uninstall() {
    #[cfg(unix)]
    // SAFETY: only resets two signal dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    let path = PARTIAL.swap(std::ptr::null_mut(), Ordering::SeqCst);
    let message: &[u8] = if path.is_null() {
        b"\nerror: interrupted\n"
    } else {
        // SAFETY: `path` came from `CString::into_raw` and nobody else holds it now.
        unsafe { libc::unlink(path) };
        b"\nerror: interrupted; the partial output file was removed\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(128 + signal);
    }
}

/// While alive, an interrupt removes `path`.
pub(crate) struct PartialFile(());

impl PartialFile {
    pub(crate) fn register(path: &Path) -> Self {
        if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
            let old = PARTIAL.swap(c.into_raw(), Ordering::SeqCst);
            free(old);
        }
        Self(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        free(PARTIAL.swap(std::ptr::null_mut(), Ordering::SeqCst));
    }
}

fn free(p: *mut libc::c_char) {
    if !p.is_null() {
        // SAFETY: from `CString::into_raw`, taken out of PARTIAL by this swap alone.
        drop(unsafe { CString::from_raw(p) });
    }
}

/// Removes `.{name}.{pid}.partial` files beside `output` whose process is
/// gone. Returns how many.
pub(crate) fn sweep_stale(output: &Path) -> usize {
    let Some(name) = output.file_name().map(|n| n.to_string_lossy().into_owned()) else { return 0 };
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".partial")) else { continue };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if !alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The process's peak resident memory in KiB, from the kernel.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    // SAFETY: rusage is plain integers (all zeros is valid) and getrusage
    // fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (rc == 0).then(|| u64::try_from(usage.ru_maxrss).unwrap_or(0))
}
