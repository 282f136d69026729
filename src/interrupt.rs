//! Ctrl-C (SIGINT) and SIGTERM during a run: a clean stop instead of death at once.
//!
//! The first signal is noted: stage code sees [`wspace_stage_api::stop_requested`] and returns at its
//! next [`wspace_stage_api::check_stop`]. The `command` kind kills its child's process group, and Slurm
//! jobs this run submitted are cancelled (see [`crate::slurm`]). The scheduler ([`crate::exec`]) starts
//! nothing new, gives running stages about a second to stop, removes their partial builds, prints the
//! summary and exits with [`exit_code`] (130 for SIGINT, 143 for SIGTERM).
//!
//! A second signal exits at once (`_exit`), after killing every child process group this run started
//! ([`ChildGuard`]); what it leaves behind is what `kill -9` leaves (the cache contract covers that).

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, or 0.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Process groups of running children (0: a free slot); killed by a second signal.
static CHILDREN: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

extern "C" fn note(sig: libc::c_int) {
    if SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        for slot in &CHILDREN {
            let pgid = slot.load(Ordering::SeqCst);
            if pgid > 0 {
                // SAFETY: kill(2) is async-signal-safe.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        // SAFETY: _exit(2) is async-signal-safe; nothing else runs after it.
        unsafe { libc::_exit(128 + sig) };
    }
    wspace_stage_api::request_stop();
}

/// Catches SIGINT and SIGTERM from now on.
pub fn catch() {
    // SAFETY: the handler only touches atomics and calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, note as *const () as libc::sighandler_t);
    }
}

/// Whether an interrupt has arrived.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// `SIGINT` or `SIGTERM`, once one arrived.
pub fn signal_name() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("a signal"),
    }
}

/// The exit status of an interrupted run: 128 + the signal's number (130 SIGINT, 143 SIGTERM).
pub fn exit_code() -> Option<u8> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some((128 + sig).min(255) as u8),
    }
}

/// A running child's process group, registered so that a second signal kills it; unregistered on drop.
pub struct ChildGuard(Option<usize>);

impl ChildGuard {
    /// Registers process group `pgid` (a child started with `process_group(0)`).
    pub fn new(pgid: u32) -> ChildGuard {
        let pgid = pgid as i32;
        let slot = CHILDREN.iter().position(|s| s.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        ChildGuard(slot)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            CHILDREN[i].store(0, Ordering::SeqCst);
        }
    }
}
