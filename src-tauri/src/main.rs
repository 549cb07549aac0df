//! Coffer's desktop shell. It will run `coffer-engine` in-process and show the
//! web UI from `ui/` through Tauri IPC, with a tray icon per sync state,
//! native notifications, autostart and single instance (issue 8). It stays
//! thin: nothing here that the CLI or the UI would also need.

fn main() {
    println!("The Coffer desktop app is not built yet; run `coffer` instead.");
}
