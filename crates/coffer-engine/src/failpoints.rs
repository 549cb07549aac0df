//! Failpoints: named spots on the way from a local file to "synced" and from
//! a fetched chunk to a file renamed into place, where the crash tests
//! (`tests/tests/e2e/failpoints.rs`) kill a real `coffer` process with
//! SIGKILL and check that a restart converges with nothing lost.
//!
//! Each spot is one line in the engine: the `fail` crate's `fail_point!`
//! macro with the spot's name. Without
//! the `failpoints` feature (every normal build) the macro expands to
//! nothing; with it, an unconfigured failpoint costs one read-locked map
//! lookup, nothing next to the I/O and sealing around it.
//!
//! Upload (read → chunk/seal → upload → commit → index):
//! `upload-read` (file opened, nothing read), `upload-sealed` (a chunk
//! sealed, not yet queued), `upload-chunks-sent` (a batch of chunks on the
//! store, not committed), `upload-before-commit`, `upload-after-commit`
//! (the store applied it, the index does not know), `upload-after-index`
//! (marked synced, the remote tree not yet updated).
//!
//! Download (chunk → temp file → fsync → rename → index):
//! `download-chunk-received` (a chunk fetched and verified, not written),
//! `download-temp-written` (all bytes written, not fsynced),
//! `download-temp-synced`, `download-before-rename` (an old version already
//! in the trash), `download-after-rename` (in place, the index does not
//! know), `download-after-index` (marked synced, the stat cache not updated).
//!
//! One more is not a crash point but an error: `writeback-error` makes the
//! early writeback of a large new file fail (`FAILPOINTS=writeback-error=return`),
//! as a failing disk would, to check that the error fails the download
//! rather than being lost (`fs.rs`, `RealWriteFile`).
//!
//! [`install_from_env`] (with the feature) arms them for one process:
//! `COFFER_KILL_AT=name` or `name@N` kills the process with SIGKILL at the
//! N-th time it passes `name` (default 1); `FAILPOINTS` takes the `fail`
//! crate's own actions (`name=panic;other=sleep(100)`).

/// Arms the failpoints named by `COFFER_KILL_AT` and `FAILPOINTS`. Keep the
/// returned scenario alive for the life of the process.
///
/// # Panics
/// On a malformed `COFFER_KILL_AT` or `FAILPOINTS`: a crash test must not
/// run with a failpoint silently unarmed.
#[cfg(feature = "failpoints")]
pub fn install_from_env() -> fail::FailScenario<'static> {
    use std::sync::atomic::{AtomicU64, Ordering};

    let scenario = fail::FailScenario::setup();
    if let Ok(spec) = std::env::var("COFFER_KILL_AT") {
        let (name, nth) = match spec.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse::<u64>().expect("COFFER_KILL_AT=name@N: N is a number")),
            None => (spec.clone(), 1),
        };
        let passes = AtomicU64::new(0);
        fail::cfg_callback(name, move || {
            if passes.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                kill_self();
            }
        })
        .expect("arming COFFER_KILL_AT");
    }
    scenario
}

/// SIGKILL to this very process (no destructor, no flush, no goodbye), as a
/// power cut or an OOM kill would. `kill(1)` sends it: `unsafe` is
/// forbidden here, so no direct `libc::kill`.
#[cfg(feature = "failpoints")]
fn kill_self() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    // The signal is on its way; never go past the failpoint.
    loop {
        std::thread::park();
    }
}
