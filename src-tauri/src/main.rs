//! Coffer's desktop app. See `lib.rs`.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    coffer_desktop::run()
}
