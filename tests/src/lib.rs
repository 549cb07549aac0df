//! End-to-end tests: a real `coffer server` on a free loopback port, real
//! `coffer` clients on temp folders, and a real browser for the UI. The
//! helpers that start and stop those processes (by their pid, never by name)
//! live here; the tests themselves are in `tests/`.
