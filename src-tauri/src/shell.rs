//! The Tauri side: the window, the tray, plugins, and the `control`
//! command. Nothing here decides anything; see [`crate::core`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use coffer_engine::control::dto::{ControlError, Event};
use coffer_engine::home::Home;
use tauri::image::Image;
use tauri::menu::{IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, RunEvent, Runtime, WindowEvent};
use tauri_plugin_autostart::{MacosLauncher, ManagerExt as _};
use tauri_plugin_notification::NotificationExt as _;
use tokio::sync::watch;

use crate::core::{Desktop, Shell};
use crate::tray::{TrayAction, TrayIcon, TrayView};

const TRAY_ID: &str = "coffer";
const HIDDEN_ARG: &str = "--hidden";

/// The app's state as Tauri holds it: the core, once it has opened.
struct Holder(watch::Receiver<Option<Arc<Desktop>>>);

impl Holder {
    async fn get(&self) -> Arc<Desktop> {
        let mut rx = self.0.clone();
        let d = rx.wait_for(Option::is_some).await.expect("the core is opened at start-up");
        d.clone().expect("checked")
    }
}

/// The one command of the UI: a request in, a response (or a
/// `{code, message}` error) out.
#[tauri::command]
async fn control(
    request: serde_json::Value,
    holder: tauri::State<'_, Holder>,
) -> Result<serde_json::Value, ControlError> {
    holder.get().await.control(request).await
}

struct TauriShell<R: Runtime> {
    app: AppHandle<R>,
    last_tray: Mutex<Option<TrayView>>,
}

impl<R: Runtime> TauriShell<R> {
    fn menu(&self, view: &TrayView) -> tauri::Result<Menu<R>> {
        let app = &self.app;
        let item = |a: TrayAction, text: &str, enabled: bool| {
            MenuItem::with_id(app, a.id(), text, enabled, None::<&str>)
        };
        let status = MenuItem::with_id(app, "status", &view.status_line, false, None::<&str>)?;
        let recent_items: Vec<MenuItem<R>> = if view.recent.is_empty() {
            vec![MenuItem::with_id(app, "recent-none", "Nothing yet", false, None::<&str>)?]
        } else {
            view.recent
                .iter()
                .enumerate()
                .map(|(i, p)| item(TrayAction::OpenRecent(i), p, view.ready))
                .collect::<tauri::Result<_>>()?
        };
        let recent_refs: Vec<&dyn IsMenuItem<R>> =
            recent_items.iter().map(|i| i as &dyn IsMenuItem<R>).collect();
        let recent = Submenu::with_items(app, "Recent files", true, &recent_refs)?;
        let pause = item(
            TrayAction::TogglePause,
            if view.paused { "Resume syncing" } else { "Pause syncing" },
            view.ready,
        )?;
        Menu::with_items(
            app,
            &[
                &status,
                &PredefinedMenuItem::separator(app)?,
                &item(TrayAction::OpenFolder, "Open Coffer folder", view.ready)?,
                &item(TrayAction::OpenWindow, "Open Coffer", true)?,
                &recent,
                &PredefinedMenuItem::separator(app)?,
                &pause,
                &PredefinedMenuItem::separator(app)?,
                &item(TrayAction::Quit, "Quit Coffer", true)?,
            ],
        )
    }
}

impl<R: Runtime> Shell for TauriShell<R> {
    fn emit(&self, event: &Event) {
        if let Err(e) = self.app.emit("control-event", event) {
            tracing::debug!("no window took the event: {e}");
        }
    }

    fn notify(&self, title: &str, body: &str) {
        if let Err(e) = self.app.notification().builder().title(title).body(body).show() {
            tracing::warn!("could not show a notification ({e}): {title}: {body}");
        }
    }

    fn update_tray(&self, view: &TrayView) {
        let mut last = self.last_tray.lock().expect("tray lock");
        if last.as_ref() == Some(view) {
            return;
        }
        let Some(tray) = self.app.tray_by_id(TRAY_ID) else { return };
        let redraw = || -> tauri::Result<()> {
            if last.as_ref().is_none_or(|l| l.icon != view.icon) {
                tray.set_icon(Some(Image::from_bytes(view.icon.png())?))?;
            }
            tray.set_tooltip(Some(view.tooltip()))?;
            tray.set_menu(Some(self.menu(view)?))?;
            Ok(())
        };
        match redraw() {
            Ok(()) => *last = Some(view.clone()),
            Err(e) => tracing::warn!("could not redraw the tray: {e}"),
        }
    }

    fn set_autostart(&self, on: bool) -> Result<(), String> {
        let launcher = self.app.autolaunch();
        let r = if on { launcher.enable() } else { launcher.disable() };
        r.map_err(|e| e.to_string())
    }

    fn open_path(&self, path: &Path) -> Result<(), String> {
        open_with_desktop(path)
    }

    fn show_window(&self) {
        show_main(&self.app);
    }

    fn exit(&self) {
        self.app.exit(0);
    }
}

/// Opens `path` with the desktop's default application (`xdg-open`).
fn open_with_desktop(path: &Path) -> Result<(), String> {
    let mut child = std::process::Command::new("xdg-open")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start xdg-open: {e}"))?;
    // Reap it, so it does not linger as a zombie.
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

fn home_from_args(args: &[String]) -> Result<Home, String> {
    let mut flag = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--home" {
            flag = Some(PathBuf::from(it.next().ok_or("--home needs a folder")?));
        } else if let Some(v) = a.strip_prefix("--home=") {
            flag = Some(PathBuf::from(v));
        }
    }
    let flag = flag.or_else(|| std::env::var_os("COFFER_HOME").map(PathBuf::from));
    Home::resolve(flag).map_err(|e| e.to_string())
}

/// Runs the app until it is quit.
pub fn run() -> std::process::ExitCode {
    coffer_cli::cmd::common::init_logging();
    let args: Vec<String> = std::env::args().collect();
    let home = match home_from_args(&args[1..]) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("coffer-desktop: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let hidden = args.iter().any(|a| a == HIDDEN_ARG);
    let (tx, rx) = watch::channel(None);
    let result = tauri::Builder::default()
        // First, so a second start only brings this one's window forward.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| show_main(app)))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_autostart::init(MacosLauncher::LaunchAgent, Some(vec![HIDDEN_ARG])))
        .manage(Holder(rx))
        .invoke_handler(tauri::generate_handler![control])
        .on_window_event(|window, event| {
            // Closing the window keeps syncing in the tray.
            if let WindowEvent::CloseRequested { api, .. } = event {
                if window.label() == "main" {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .setup(move |app| {
            let handle = app.handle().clone();
            TrayIconBuilder::with_id(TRAY_ID)
                .icon(Image::from_bytes(TrayIcon::Paused.png())?)
                .tooltip("Coffer")
                .show_menu_on_left_click(true)
                .on_menu_event(|app, event| {
                    let Some(action) = TrayAction::from_id(event.id().as_ref()) else { return };
                    let app = app.clone();
                    tauri::async_runtime::spawn(async move {
                        let desktop = app.state::<Holder>().get().await;
                        if let Err(e) = desktop.perform(action).await {
                            tracing::warn!("tray action {action:?}: {e}");
                        }
                    });
                })
                .build(app)?;
            let shell = Arc::new(TauriShell { app: handle.clone(), last_tray: Mutex::new(None) });
            tauri::async_runtime::spawn(async move {
                let desktop = Desktop::open(home, shell).await;
                if hidden && !desktop.is_syncing().await {
                    // Started at login but not set up: the person must see it.
                    show_main(&handle);
                }
                let _ = tx.send(Some(desktop.clone()));
                stop_on_signals(handle, desktop).await;
            });
            if hidden {
                if let Some(w) = app.get_webview_window("main") {
                    w.hide()?;
                }
            }
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match result {
        Ok(app) => app,
        Err(e) => {
            eprintln!("coffer-desktop: could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    app.run(|app, event| {
        if let RunEvent::ExitRequested { code: None, api, .. } = event {
            // The last window closed (it hides instead, but a window manager
            // may still destroy it): keep syncing in the tray.
            let _ = app;
            api.prevent_exit();
        }
    });
    std::process::ExitCode::SUCCESS
}

/// SIGTERM or Ctrl-C: stop cleanly, as "Quit" does.
async fn stop_on_signals<R: Runtime>(app: AppHandle<R>, desktop: Arc<Desktop>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    desktop.shutdown().await;
    app.exit(0);
}
