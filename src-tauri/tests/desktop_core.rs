//! The desktop app's core without a display: the first run against a real
//! store (the embedded one, and a server over loopback HTTP), the engine
//! syncing in-process, and every tray action through the same
//! `Desktop::perform` the tray menu calls. The shell here records what the
//! desktop would have been asked to do (open a folder, notify, exit).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_desktop::core::{Desktop, Shell, Step};
use coffer_desktop::tray::{TrayAction, TrayIcon, TrayView};
use coffer_engine::control::dto::Event;
use coffer_engine::home::Home;
use serde_json::{json, Value};

#[derive(Default)]
struct Recorded {
    events: usize,
    notices: Vec<(String, String)>,
    tray: Option<TrayView>,
    autostart: Vec<bool>,
    opened: Vec<PathBuf>,
    shown: usize,
    exits: usize,
}

#[derive(Default)]
struct RecordingShell(Mutex<Recorded>);

impl Shell for RecordingShell {
    fn emit(&self, _event: &Event) {
        self.0.lock().unwrap().events += 1;
    }
    fn notify(&self, title: &str, body: &str) {
        self.0.lock().unwrap().notices.push((title.into(), body.into()));
    }
    fn update_tray(&self, view: &TrayView) {
        self.0.lock().unwrap().tray = Some(view.clone());
    }
    fn set_autostart(&self, on: bool) -> Result<(), String> {
        self.0.lock().unwrap().autostart.push(on);
        Ok(())
    }
    fn open_path(&self, path: &Path) -> Result<(), String> {
        self.0.lock().unwrap().opened.push(path.to_path_buf());
        Ok(())
    }
    fn show_window(&self) {
        self.0.lock().unwrap().shown += 1;
    }
    fn exit(&self) {
        self.0.lock().unwrap().exits += 1;
    }
}

async fn ask(d: &Arc<Desktop>, req: Value) -> Value {
    match d.control(req.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("{req} failed: {} {}", serde_json::to_string(&e.code).unwrap(), e.message),
    }
}

async fn refused(d: &Arc<Desktop>, req: Value) -> String {
    match d.control(req.clone()).await {
        Ok(v) => panic!("{req} should fail, got {v}"),
        Err(e) => serde_json::to_value(e.code).unwrap().as_str().unwrap().to_string(),
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_kdf() {
    // Cheap OPAQUE parameters (an account made with them logs in with them).
    std::env::set_var("COFFER_INSECURE_FAST_KDF", "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_on_the_local_store_then_every_tray_action() {
    fast_kdf();
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::at(tmp.path().join("home")).unwrap();
    let root = tmp.path().join("Coffer");
    let shell = Arc::new(RecordingShell::default());
    let d = Desktop::open(home.clone(), shell.clone()).await;

    assert_eq!(d.setup_state().await.unwrap().step, Step::Store);
    assert!(!shell.0.lock().unwrap().tray.as_ref().unwrap().ready);
    assert_eq!(refused(&d, json!({"type": "get_status"})).await, "not_logged_in");
    assert_eq!(refused(&d, json!({"type": "finish_setup"})).await, "refused");
    assert_eq!(refused(&d, json!({"type": "no_such_thing"})).await, "bad_request");
    assert!(d.perform(TrayAction::TogglePause).await.is_err(), "nothing to pause before the first run");

    let s = ask(&d, json!({"type": "use_local_store"})).await;
    assert_eq!(s["step"], "recovery");
    assert_eq!(s["store"], "local");
    let key = s["recovery_key"].as_str().unwrap();
    assert!(coffer_crypto::RecoveryKey::parse(key).is_ok(), "a real recovery key: {key}");
    assert_eq!(refused(&d, json!({"type": "choose_folder", "path": root})).await, "refused");
    let s = ask(&d, json!({"type": "confirm_recovery_key"})).await;
    assert_eq!(s["step"], "folder");
    assert_eq!(s["recovery_key"], Value::Null, "the key is shown on its step only");

    // Bad folders are refused with a reason.
    assert_eq!(refused(&d, json!({"type": "choose_folder", "path": "relative/dir"})).await, "bad_request");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(refused(&d, json!({"type": "choose_folder", "path": file})).await, "bad_request");
    assert_eq!(refused(&d, json!({"type": "choose_folder", "path": home.dir()})).await, "bad_request");
    assert_eq!(refused(&d, json!({"type": "choose_folder", "path": tmp.path()})).await, "bad_request");

    let s = ask(&d, json!({"type": "choose_folder", "path": root})).await;
    assert_eq!(s["step"], "choose");
    let f = ask(&d, json!({"type": "list_folder", "path": ""})).await;
    assert_eq!(f["type"], "folder");
    let s = ask(&d, json!({"type": "finish_setup"})).await;
    assert_eq!(s["step"], "done");
    assert!(d.is_syncing().await);

    // A file written into the folder is uploaded and becomes a recent file.
    std::fs::write(root.join("hello.txt"), b"hello").unwrap();
    until("hello.txt in the tray's recent files", || {
        d.tray_view().recent.first().map(String::as_str) == Some("hello.txt")
            && d.tray_view().icon == TrayIcon::UpToDate
    })
    .await;
    assert!(shell.0.lock().unwrap().events > 0, "events reach the window");
    assert_eq!(shell.0.lock().unwrap().tray.as_ref().unwrap().recent, ["hello.txt"]);

    d.perform(TrayAction::OpenFolder).await.unwrap();
    d.perform(TrayAction::OpenRecent(0)).await.unwrap();
    assert!(d.perform(TrayAction::OpenRecent(7)).await.is_err());
    d.perform(TrayAction::OpenWindow).await.unwrap();
    {
        let r = shell.0.lock().unwrap();
        assert_eq!(r.opened, [root.clone(), root.join("hello.txt")]);
        assert_eq!(r.shown, 1);
    }

    // Pause: the tray says so, the engine stops, nothing new goes up.
    d.perform(TrayAction::TogglePause).await.unwrap();
    let engine = d.engine().await.unwrap();
    assert!(engine.is_paused());
    assert!(d.tray_view().paused);
    assert_eq!(d.tray_view().icon, TrayIcon::Paused);
    let st = ask(&d, json!({"type": "get_status"})).await;
    assert_eq!(st["state"], "paused");
    std::fs::write(root.join("while-paused.txt"), b"later").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!d.tray_view().recent.iter().any(|p| p == "while-paused.txt"), "paused means paused");
    d.perform(TrayAction::TogglePause).await.unwrap();
    assert!(!engine.is_paused());
    until("the file written while paused to go up after resuming", || {
        d.tray_view().recent.iter().any(|p| p == "while-paused.txt")
    })
    .await;

    // "Start at login" reaches the desktop session.
    let s = ask(&d, json!({"type": "update_settings", "start_at_login": true})).await;
    assert_eq!(s["start_at_login"], true);
    assert_eq!(shell.0.lock().unwrap().autostart.last(), Some(&true));

    // Quit stops cleanly.
    d.perform(TrayAction::Quit).await.unwrap();
    assert_eq!(shell.0.lock().unwrap().exits, 1);
    assert!(!d.is_syncing().await);
    assert!(!root.join(".coffer/daemon.pid").exists(), "the daemon cleaned up");
    drop(d);

    // The next start goes straight to syncing, on the same local account.
    let shell2 = Arc::new(RecordingShell::default());
    let d2 = Desktop::open(home.clone(), shell2.clone()).await;
    assert_eq!(d2.setup_state().await.unwrap().step, Step::Done);
    assert!(d2.is_syncing().await);
    assert_eq!(shell2.0.lock().unwrap().autostart.first(), Some(&true), "the stored setting is applied");
    let a = ask(&d2, json!({"type": "get_activity"})).await;
    assert_eq!(a["type"], "activity");
    d2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_against_a_server_signup_then_login_on_a_second_device() {
    fast_kdf();
    let tmp = tempfile::tempdir().unwrap();
    // A real Coffer server on loopback: the embedded store of another home.
    let server_home = Home::at(tmp.path().join("server-home")).unwrap();
    let server = coffer_cli::cmd::up::LocalStore::start(&server_home).await.unwrap();
    let url = server.url();

    let d = Desktop::open(Home::at(tmp.path().join("a")).unwrap(), Arc::new(RecordingShell::default())).await;
    assert_eq!(refused(&d, json!({"type": "use_server", "url": "ftp://example"})).await, "bad_request");
    assert_eq!(
        refused(&d, json!({"type": "use_server", "url": "http://127.0.0.1:1"})).await,
        "store_unreachable"
    );
    let s = ask(&d, json!({"type": "use_server", "url": format!("{url}/")})).await;
    assert_eq!(s["step"], "account");
    assert_eq!(s["store_url"], url.as_str(), "the trailing slash is dropped");
    assert_eq!(refused(&d, json!({"type": "signup", "email": " ", "password": "pw"})).await, "bad_request");
    let s = ask(&d, json!({"type": "signup", "email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(s["step"], "recovery");
    assert_eq!(s["account"], "ada@example.com");
    assert!(s["recovery_key"].is_string());
    ask(&d, json!({"type": "confirm_recovery_key"})).await;
    let root_a = tmp.path().join("A");
    ask(&d, json!({"type": "choose_folder", "path": root_a})).await;
    ask(&d, json!({"type": "finish_setup"})).await;
    std::fs::create_dir_all(root_a.join("Photos")).unwrap();
    std::fs::write(root_a.join("Photos/cat.jpg"), b"meow").unwrap();
    std::fs::create_dir_all(root_a.join("Work")).unwrap();
    std::fs::write(root_a.join("Work/plan.txt"), b"plan").unwrap();
    until("both files uploaded", || {
        let v = d.tray_view();
        ["Photos/cat.jpg", "Work/plan.txt"].iter().all(|f| v.recent.iter().any(|r| r == f))
            && v.icon == TrayIcon::UpToDate
    })
    .await;

    // A second device logs in: a wrong password is refused, the right one
    // skips the recovery key (it was shown at signup), and the store's
    // folders are there to choose from.
    let d2 =
        Desktop::open(Home::at(tmp.path().join("b")).unwrap(), Arc::new(RecordingShell::default())).await;
    ask(&d2, json!({"type": "use_server", "url": url})).await;
    assert_eq!(
        refused(&d2, json!({"type": "login", "email": "ada@example.com", "password": "wrong"})).await,
        "store_refused"
    );
    let s = ask(&d2, json!({"type": "login", "email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(s["step"], "folder");
    let root_b = tmp.path().join("B");
    ask(&d2, json!({"type": "choose_folder", "path": root_b})).await;
    let top = ask(&d2, json!({"type": "list_folder", "path": ""})).await;
    let names: Vec<&str> =
        top["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Photos", "Work"]);
    ask(&d2, json!({"type": "set_folder_sync", "path": "Photos", "included": false})).await;
    ask(&d2, json!({"type": "finish_setup"})).await;
    until("Work/plan.txt on the second device", || root_b.join("Work/plan.txt").exists()).await;
    assert_eq!(std::fs::read(root_b.join("Work/plan.txt")).unwrap(), b"plan");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!root_b.join("Photos").exists(), "an unchecked folder stays off this device");

    // Logging out stops syncing and goes back to the account step.
    ask(&d2, json!({"type": "logout"})).await;
    assert!(!d2.is_syncing().await);
    assert_eq!(d2.setup_state().await.unwrap().step, Step::Account);

    d.shutdown().await;
    d2.shutdown().await;
    server.shutdown().await.unwrap();
}

#[test]
fn debug_output_shows_no_password_or_recovery_key() {
    let req: coffer_desktop::core::SetupRequest =
        serde_json::from_value(json!({"type": "signup", "email": "a@b", "password": "hunter2-secret"}))
            .unwrap();
    let shown = format!("{req:?}");
    assert!(shown.contains("a@b") && !shown.contains("hunter2"), "{shown}");
    let dto = coffer_desktop::core::SetupDto {
        kind: "setup",
        step: Step::Recovery,
        store: None,
        store_url: None,
        account: None,
        recovery_key: Some("ABCD-EFGH".into()),
        folder: "/x".into(),
    };
    assert!(!format!("{dto:?}").contains("ABCD"));
}
