//! End-to-end tests with real processes: one `coffer server`, several
//! `coffer` clients on temp folders, driven through the command line.

mod e2e {
    mod basics;
    mod conflicts;
    mod disks;
    mod failpoints;
    mod features;
    mod hostile;
    mod proxy;
    mod robustness;
    mod scale_out;
    mod ui_api;
}
