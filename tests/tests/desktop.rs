//! The real desktop app (`coffer-desktop`), driven through WebDriver under
//! Xvfb: the first run against a real server, a file from a second device
//! (the CLI) arriving in the folder and the activity list, a conflict
//! resolved from the dialog, pause and resume. Screenshots go to
//! `target/desktop-screenshots/`.
//!
//! It needs a display, `tauri-driver` and `WebKitWebDriver`, so it is
//! ignored by a plain `cargo test`; `scripts/test` installs those and runs
//! it with `--ignored` under `xvfb-run`.

use std::path::PathBuf;
use std::time::Duration;

use coffer_e2e::webdriver::{screenshot_dir, Driver};
use coffer_e2e::{wait_until, Client, Server, PASSWORD};

fn desktop_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COFFER_DESKTOP_BIN") {
        return PathBuf::from(p);
    }
    let bin = coffer_e2e::coffer_bin().with_file_name("coffer-desktop");
    assert!(bin.exists(), "{} is missing: `cargo build -p coffer-desktop` first", bin.display());
    bin
}

const EMAIL: &str = "ada@example.com";
const LONG: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs a display, tauri-driver and WebKitWebDriver: scripts/test runs it under xvfb-run"]
fn desktop_app_first_run_sync_conflict_and_pause() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let user_home = tmp.path().join("user");
    let root = tmp.path().join("Coffer Desktop");
    std::fs::create_dir_all(&user_home).unwrap();
    let shots = screenshot_dir();
    let _ = std::fs::remove_file(shots.join("failure.png"));
    let shot = |s: &coffer_e2e::webdriver::Session<'_>, name: &str| {
        s.screenshot(&shots.join(format!("{name}.png"))).expect("screenshot");
    };

    let driver = Driver::start(&[
        ("HOME", &user_home),
        ("XDG_CONFIG_HOME", &user_home.join(".config")),
        ("XDG_DATA_HOME", &user_home.join(".local/share")),
        ("COFFER_INSECURE_FAST_KDF", std::path::Path::new("1")),
    ]);
    let app = driver.session(&desktop_bin(), &["--home", home.to_str().unwrap()]);

    // First run: a server, a new account, the recovery key, the folder.
    app.el("#store-server").click();
    app.el("#server-url").fill(&server.url);
    shot(&app, "01-store");
    app.el("#store-next").click();
    app.el("#email").fill(EMAIL);
    app.el("#password").fill(PASSWORD);
    app.el("#password2").fill("not the same");
    app.el("#account-next").click();
    app.wait_text("The passwords do not match", LONG);
    app.el("#password2").fill(PASSWORD);
    app.el("#account-next").click();
    let key = app.el("#recovery-key").text();
    assert!(coffer_crypto_key_shape(&key), "a recovery key is shown: {key:?}");
    shot(&app, "02-recovery-key");
    app.el("#recovery-saved").click();
    app.el("#recovery-next").click();
    let folder = app.el("#folder");
    folder.fill(root.to_str().unwrap());
    app.el("#folder-next").click();
    app.el("#finish-setup");
    shot(&app, "03-what-to-sync");
    app.el("#finish-setup").click();
    app.el("#sync-state[data-state=\"up_to_date\"]");
    assert!(root.join(".coffer").is_dir(), "the folder is set up");
    shot(&app, "04-status");

    // A second device (the CLI) adds a file: it lands in the folder and in
    // the activity list.
    let cli = Client::new();
    cli.login(&server, EMAIL);
    cli.write("from-cli.txt", b"hello from the command line");
    cli.sync();
    wait_until("from-cli.txt on the desktop", LONG, || {
        std::fs::read(root.join("from-cli.txt")).ok().as_deref() == Some(&b"hello from the command line"[..])
    });
    app.el("#nav-activity").click();
    app.wait_text("from-cli.txt", LONG);
    shot(&app, "05-activity");

    // Pause: nothing arrives. Both sides edit one file meanwhile.
    app.el("#nav-status").click();
    app.el("#pause-button").click();
    app.el("#sync-state[data-state=\"paused\"]");
    std::fs::write(root.join("report.txt"), b"the desktop's version").unwrap();
    cli.write("report.txt", b"the CLI's version");
    cli.write("while-paused.txt", b"waits for resume");
    cli.sync();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!root.join("while-paused.txt").exists(), "a paused app downloads nothing");
    shot(&app, "06-paused");

    // Resume: the file arrives and the edits conflict.
    app.el("#pause-button").click();
    wait_until("while-paused.txt after resuming", LONG, || root.join("while-paused.txt").exists());
    app.wait("#conflict-badge:not([hidden])", LONG);
    app.el("#nav-conflicts").click();
    app.el(".conflict-item button.resolve").click();
    app.el("dialog .side.mine");
    shot(&app, "07-conflict-dialog");
    app.el("#keep-mine").click();
    app.el("#no-conflicts");
    wait_until("both devices to keep the desktop's version", LONG, || {
        cli.sync();
        cli.read("report.txt") == b"the desktop's version"
            && std::fs::read(root.join("report.txt")).unwrap() == b"the desktop's version"
            && !cli.tree().keys().any(|k| k.contains("conflicted copy"))
    });
    assert!(
        !coffer_e2e::tree(&root).keys().any(|k| k.contains("conflicted copy")),
        "keep mine removes the conflicted copy"
    );
    shot(&app, "08-resolved");
    drop(app);
    drop(driver);
}

/// 56 Crockford base32 characters in groups of four.
fn coffer_crypto_key_shape(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 14 && groups.iter().all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_alphanumeric()))
}
