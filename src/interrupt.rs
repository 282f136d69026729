//! Ctrl-C (SIGINT) and SIGTERM while stages run elsewhere: instead of dying at once, the run notes the
//! request, cancels the jobs it submitted itself (see [`crate::slurm`]), starts nothing new, and exits
//! with status 130. Installed only for runs that use an executor other than `local`; a local run keeps
//! the default disposition (the process dies; the cache contract covers that).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM from now on.
pub fn catch() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, note as *const () as libc::sighandler_t);
    }
}

/// Whether an interrupt has arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
