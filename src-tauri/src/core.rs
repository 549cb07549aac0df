//! The desktop app without its windows: first run, the engine in-process,
//! and what the tray and notifications show. Everything here runs (and is
//! tested) without a display; the Tauri side ([`crate::shell`]) only
//! carries requests in and effects out through [`Shell`].
//!
//! The UI sends every request through one `control` command. Requests whose
//! `type` is a first-run step ([`SetupRequest`]) are answered here; every
//! other request goes to the engine's `control::dispatch`, the same
//! function the loopback HTTP transport calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use coffer_cli::cmd::common::{absolute, open_engine, CliEngine};
use coffer_cli::cmd::up::LocalStore;
use coffer_crypto::RecoveryKey;
use coffer_engine::control::dispatch::dispatch;
use coffer_engine::control::dto::{ControlError, ErrorCode, Event, Request, Response, SettingsPatch};
use coffer_engine::control::{events, Control};
use coffer_engine::home::Home;
use coffer_engine::remote::{HttpRemote, RetryRemote};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::notify::Notifier;
use crate::tray::{TrayAction, TrayView};

/// How often the quota is checked for the "nearly full" notice.
const QUOTA_EVERY: Duration = Duration::from_secs(600);
/// Full rescan interval of the daemon (a safety net for lost watcher events).
const RESCAN: Duration = Duration::from_secs(600);

/// What the desktop can do that the core cannot: the window, the tray, the
/// notification area, the session's autostart entry, a file manager.
pub trait Shell: Send + Sync + 'static {
    /// Sends an engine event to the window (`control-event`).
    fn emit(&self, event: &Event);
    /// Shows a native notification.
    fn notify(&self, title: &str, body: &str);
    /// Redraws the tray icon and menu.
    fn update_tray(&self, view: &TrayView);
    /// Turns "start at login" on or off in the desktop session.
    fn set_autostart(&self, on: bool) -> Result<(), String>;
    /// Opens a file or folder with the desktop's default application.
    fn open_path(&self, path: &Path) -> Result<(), String>;
    /// Shows and focuses the Coffer window.
    fn show_window(&self);
    /// Ends the process (after [`Desktop::shutdown`]).
    fn exit(&self);
}

/// Which store this device syncs against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreChoice {
    /// The embedded store on this machine (as `coffer up`).
    Local,
    /// A Coffer server.
    Server { url: String },
}

/// The first run's progress, kept in the home folder as `desktop.json`, so
/// a restart resumes where the person left off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DesktopConfig {
    store: Option<StoreChoice>,
    root: Option<PathBuf>,
    #[serde(default)]
    recovery_confirmed: bool,
    #[serde(default)]
    setup_done: bool,
}

/// The first-run requests. `Debug` never shows a password.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SetupRequest {
    /// Where the first run stands.
    GetSetup,
    /// Use the embedded store on this machine (creates a local account).
    UseLocalStore,
    /// Use the server at `url`.
    UseServer { url: String },
    /// Create an account on the chosen server.
    Signup { email: String, password: String },
    /// Log in to an account on the chosen server.
    Login { email: String, password: String },
    /// The person saved the recovery key.
    ConfirmRecoveryKey,
    /// Sync this folder.
    ChooseFolder { path: String },
    /// Go back to choosing the store.
    ChangeStore,
    /// Start syncing.
    FinishSetup,
}

impl std::fmt::Debug for SetupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Signup { email, .. } => {
                f.debug_struct("Signup").field("email", email).finish_non_exhaustive()
            }
            Self::Login { email, .. } => {
                f.debug_struct("Login").field("email", email).finish_non_exhaustive()
            }
            Self::UseServer { url } => f.debug_struct("UseServer").field("url", url).finish(),
            Self::ChooseFolder { path } => f.debug_struct("ChooseFolder").field("path", path).finish(),
            Self::GetSetup => f.write_str("GetSetup"),
            Self::UseLocalStore => f.write_str("UseLocalStore"),
            Self::ConfirmRecoveryKey => f.write_str("ConfirmRecoveryKey"),
            Self::ChangeStore => f.write_str("ChangeStore"),
            Self::FinishSetup => f.write_str("FinishSetup"),
        }
    }
}

impl SetupRequest {
    /// The request types answered by the first run, not by the engine.
    pub const TYPES: &'static [&'static str] = &[
        "get_setup",
        "use_local_store",
        "use_server",
        "signup",
        "login",
        "confirm_recovery_key",
        "choose_folder",
        "change_store",
        "finish_setup",
    ];
}

/// A step of the first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Choose the store.
    Store,
    /// Sign up or log in.
    Account,
    /// Show the recovery key; wait for "I saved it".
    Recovery,
    /// Choose the folder.
    Folder,
    /// Choose what to sync (the selective-sync tree).
    Choose,
    /// Set up and syncing.
    Done,
}

/// The answer to every first-run request. `Debug` never shows the
/// recovery key.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SetupDto {
    /// Always `setup`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where the first run stands.
    pub step: Step,
    /// `local` or `server`, once chosen.
    pub store: Option<String>,
    /// The server's URL (or the local store's address).
    pub store_url: Option<String>,
    /// The account's name, once logged in.
    pub account: Option<String>,
    /// The recovery key, on the recovery step only.
    pub recovery_key: Option<String>,
    /// The folder chosen, or the one suggested.
    pub folder: String,
}

impl std::fmt::Debug for SetupDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupDto")
            .field("step", &self.step)
            .field("store", &self.store)
            .field("store_url", &self.store_url)
            .field("account", &self.account)
            .field("recovery_key", &self.recovery_key.as_ref().map(|_| "****"))
            .field("folder", &self.folder)
            .finish()
    }
}

struct Running {
    control: Arc<Control<RetryRemote<HttpRemote>>>,
    /// The daemon, once the first run is finished.
    daemon: Option<(watch::Sender<bool>, JoinHandle<anyhow::Result<()>>)>,
    /// Forwards events to the window, tray and notifications.
    forward: JoinHandle<()>,
}

struct State {
    config: DesktopConfig,
    local: Option<LocalStore>,
    running: Option<Running>,
}

/// The desktop app's core.
pub struct Desktop {
    home: Home,
    shell: Arc<dyn Shell>,
    state: Mutex<State>,
    tray: StdMutex<TrayView>,
    notifier: StdMutex<Notifier>,
}

impl std::fmt::Debug for Desktop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desktop").field("home", &self.home.dir()).finish_non_exhaustive()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ControlError {
    ControlError::new(code, message)
}

fn from_anyhow(code: ErrorCode, e: anyhow::Error) -> ControlError {
    err(code, format!("{e:#}"))
}

impl Desktop {
    /// Opens the app on `home`: resumes the first run where it was left, or
    /// starts syncing when it was finished.
    pub async fn open(home: Home, shell: Arc<dyn Shell>) -> Arc<Self> {
        let config = load_config(&home);
        let desktop = Arc::new(Self {
            home,
            shell,
            state: Mutex::new(State { config, local: None, running: None }),
            tray: StdMutex::new(TrayView::setting_up()),
            notifier: StdMutex::new(Notifier::default()),
        });
        if let Err(e) = desktop.resume().await {
            tracing::warn!("could not resume: {}", e.message);
            desktop.shell.notify("Coffer could not start syncing", &e.message);
        }
        desktop.shell.update_tray(&desktop.tray_view());
        desktop
    }

    async fn resume(self: &Arc<Self>) -> Result<(), ControlError> {
        let mut st = self.state.lock().await;
        if st.config.store == Some(StoreChoice::Local) {
            let store = LocalStore::start(&self.home)
                .await
                .map_err(|e| from_anyhow(ErrorCode::Internal, e.context("starting the local store")))?;
            // The store may have moved to another port: log in again.
            store.ensure_account(&self.home).await.map_err(|e| from_anyhow(ErrorCode::StoreRefused, e))?;
            st.local = Some(store);
        }
        if st.config.setup_done {
            let root = st.config.root.clone().ok_or_else(|| err(ErrorCode::Internal, "no folder"))?;
            if !self.logged_in(&st)? {
                // Logged out elsewhere (or the credentials are gone): sign in again.
                st.config.setup_done = false;
                save_config(&self.home, &st.config)?;
                return Ok(());
            }
            self.start_engine(&mut st, &root).await?;
            self.start_daemon(&mut st);
        }
        Ok(())
    }

    /// The home folder.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Answers one request of the UI: a first-run step, or an engine request.
    pub async fn control(
        self: &Arc<Self>,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, ControlError> {
        let ty = request.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if SetupRequest::TYPES.contains(&ty) {
            let req: SetupRequest = serde_json::from_value(request)
                .map_err(|e| err(ErrorCode::BadRequest, format!("bad request: {e}")))?;
            let dto = self.setup(req).await?;
            return Ok(serde_json::to_value(dto).expect("a setup answer serializes"));
        }
        let req: Request = serde_json::from_value(request)
            .map_err(|e| err(ErrorCode::BadRequest, format!("bad request: {e}")))?;
        let res = self.engine_request(req).await?;
        Ok(serde_json::to_value(res).expect("a response serializes"))
    }

    /// Answers an engine request (the same `dispatch` as over HTTP), then
    /// applies what only the desktop can: autostart, sign-out.
    pub async fn engine_request(self: &Arc<Self>, req: Request) -> Result<Response, ControlError> {
        let control = self.control_handle().await?;
        let autostart = match &req {
            Request::UpdateSettings(SettingsPatch { start_at_login: Some(on), .. }) => Some(*on),
            _ => None,
        };
        let logout = matches!(req, Request::Logout);
        let res = dispatch(&control, req).await?;
        if let Some(on) = autostart {
            self.shell
                .set_autostart(on)
                .map_err(|e| err(ErrorCode::Internal, format!("could not change start at login: {e}")))?;
        }
        if logout {
            self.signed_out().await;
        }
        if matches!(res, Response::Settings(_)) {
            self.refresh_tray();
        }
        Ok(res)
    }

    async fn control_handle(&self) -> Result<Arc<Control<RetryRemote<HttpRemote>>>, ControlError> {
        let st = self.state.lock().await;
        st.running
            .as_ref()
            .map(|r| r.control.clone())
            .ok_or_else(|| err(ErrorCode::NotLoggedIn, "Coffer is not set up yet: finish the first run"))
    }

    /// The engine, once a folder is chosen.
    pub async fn engine(&self) -> Option<Arc<CliEngine>> {
        self.state.lock().await.running.as_ref().map(|r| r.control.engine().clone())
    }

    /// Where the first run stands.
    pub async fn setup_state(&self) -> Result<SetupDto, ControlError> {
        let st = self.state.lock().await;
        self.describe(&st)
    }

    fn store_url(&self, st: &State) -> Option<String> {
        match &st.config.store {
            Some(StoreChoice::Local) => st.local.as_ref().map(|l| l.url()),
            Some(StoreChoice::Server { url }) => Some(url.clone()),
            None => None,
        }
    }

    fn logged_in(&self, st: &State) -> Result<bool, ControlError> {
        let creds = self.home.credentials().map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        Ok(match (creds, self.store_url(st)) {
            (Some(c), Some(url)) => c.server == url,
            _ => false,
        })
    }

    fn step(&self, st: &State) -> Result<Step, ControlError> {
        Ok(if st.config.store.is_none() {
            Step::Store
        } else if !self.logged_in(st)? {
            Step::Account
        } else if !st.config.recovery_confirmed {
            Step::Recovery
        } else if st.running.is_none() {
            Step::Folder
        } else if !st.config.setup_done {
            Step::Choose
        } else {
            Step::Done
        })
    }

    fn describe(&self, st: &State) -> Result<SetupDto, ControlError> {
        let step = self.step(st)?;
        let creds = self.home.credentials().map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let logged = self.logged_in(st)?;
        let recovery_key = match (&creds, step) {
            (Some(c), Step::Recovery) => Some(RecoveryKey::from_master(&c.master).to_string()),
            _ => None,
        };
        let folder = match &st.config.root {
            Some(r) => r.display().to_string(),
            None => default_folder().display().to_string(),
        };
        Ok(SetupDto {
            kind: "setup",
            step,
            store: st.config.store.as_ref().map(|s| match s {
                StoreChoice::Local => "local".to_string(),
                StoreChoice::Server { .. } => "server".to_string(),
            }),
            store_url: self.store_url(st),
            account: creds.filter(|_| logged).map(|c| c.username.clone()),
            recovery_key,
            folder,
        })
    }

    /// One first-run step.
    pub async fn setup(self: &Arc<Self>, req: SetupRequest) -> Result<SetupDto, ControlError> {
        let mut st = self.state.lock().await;
        let step = self.step(&st)?;
        let wrong = |what: &str| {
            Err(err(
                ErrorCode::Refused,
                format!("{what} is not the next step of the first run (now: {step:?})"),
            ))
        };
        let signup = matches!(req, SetupRequest::Signup { .. });
        match req {
            SetupRequest::GetSetup => {}
            SetupRequest::ChangeStore => {
                if step == Step::Done || step == Step::Choose {
                    return wrong("changing the store");
                }
                st.config = DesktopConfig::default();
                st.running = None;
                if let Some(l) = st.local.take() {
                    let _ = l.shutdown().await;
                }
                save_config(&self.home, &st.config)?;
            }
            SetupRequest::UseLocalStore => {
                if step != Step::Store {
                    return wrong("choosing the store");
                }
                let store = LocalStore::start(&self.home)
                    .await
                    .map_err(|e| from_anyhow(ErrorCode::Internal, e.context("starting the local store")))?;
                let fresh = store
                    .ensure_account(&self.home)
                    .await
                    .map_err(|e| from_anyhow(ErrorCode::StoreRefused, e))?
                    .is_some();
                st.local = Some(store);
                st.config.store = Some(StoreChoice::Local);
                // An account made before (by `coffer up`) showed its key then.
                st.config.recovery_confirmed = !fresh;
                save_config(&self.home, &st.config)?;
            }
            SetupRequest::UseServer { url } => {
                if step != Step::Store {
                    return wrong("choosing the store");
                }
                let url = check_server_url(&url).await?;
                st.config.store = Some(StoreChoice::Server { url });
                save_config(&self.home, &st.config)?;
            }
            SetupRequest::Signup { email, password } | SetupRequest::Login { email, password }
                if step != Step::Account =>
            {
                let _ = (email, zeroize::Zeroizing::new(password));
                return wrong("signing in");
            }
            SetupRequest::Signup { email, password } | SetupRequest::Login { email, password } => {
                let password = zeroize::Zeroizing::new(password);
                let url = self
                    .store_url(&st)
                    .ok_or_else(|| err(ErrorCode::StoreUnreachable, "the store is not running"))?;
                check_account_fields(&email, &password)?;
                let (home, email) = (&self.home, email.trim());
                if signup {
                    coffer_cli::cmd::account::signup(home, &url, email, &password).await.map(drop)
                } else {
                    coffer_cli::cmd::account::login(home, &url, email, &password).await
                }
                .map_err(account_error)?;
                // A login's key was shown when the account was made; a
                // signup's is shown next.
                st.config.recovery_confirmed = !signup;
                save_config(&self.home, &st.config)?;
            }
            SetupRequest::ConfirmRecoveryKey => {
                if step != Step::Recovery {
                    return wrong("confirming the recovery key");
                }
                st.config.recovery_confirmed = true;
                save_config(&self.home, &st.config)?;
            }
            SetupRequest::ChooseFolder { path } => {
                if step != Step::Folder && step != Step::Choose {
                    return wrong("choosing the folder");
                }
                let root = check_folder(&self.home, &path)?;
                if let Some(r) = st.running.take() {
                    r.forward.abort();
                }
                self.start_engine(&mut st, &root).await?;
                st.config.root = Some(root);
                save_config(&self.home, &st.config)?;
                // Learn the store's tree so the person can choose what to sync.
                let engine = st.running.as_ref().expect("just started").control.engine().clone();
                drop(st);
                let mut problems = Vec::new();
                engine.pull(&mut problems).await.map_err(|e| {
                    err(ErrorCode::StoreUnreachable, format!("could not read the store's folders: {e}"))
                })?;
                let st = self.state.lock().await;
                return self.describe(&st);
            }
            SetupRequest::FinishSetup => {
                if step != Step::Choose {
                    return wrong("finishing");
                }
                st.config.setup_done = true;
                save_config(&self.home, &st.config)?;
                self.start_daemon(&mut st);
            }
        }
        let dto = self.describe(&st)?;
        drop(st);
        self.refresh_tray();
        Ok(dto)
    }

    async fn start_engine(self: &Arc<Self>, st: &mut State, root: &Path) -> Result<(), ControlError> {
        let engine = Arc::new(open_engine(&self.home, root).map_err(|e| from_anyhow(ErrorCode::Refused, e))?);
        let control = Arc::new(Control::new(engine.clone(), Some(self.home.clone())));
        // Make the session's autostart entry match the stored setting.
        let want = matches!(dispatch(&control, Request::GetSettings).await, Ok(Response::Settings(ref s)) if s.start_at_login);
        if let Err(e) = self.shell.set_autostart(want) {
            tracing::warn!("could not apply start at login: {e}");
        }
        let forward = tokio::spawn(forward_events(Arc::downgrade(self), engine.clone()));
        st.running = Some(Running { control, daemon: None, forward });
        Ok(())
    }

    fn start_daemon(self: &Arc<Self>, st: &mut State) {
        let Some(running) = st.running.as_mut() else { return };
        if running.daemon.is_some() {
            return;
        }
        let engine = running.control.engine().clone();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            move |stop| coffer_cli::cmd::sync::run_daemon(engine.clone(), RESCAN, stop),
            rx,
        ));
        running.daemon = Some((tx, task));
        tokio::spawn(check_quota(Arc::downgrade(self)));
    }

    /// Stops syncing after a sign-out; the first run starts again at the
    /// account step.
    async fn signed_out(&self) {
        let mut st = self.state.lock().await;
        if let Some(r) = st.running.take() {
            stop_running(r).await;
        }
        st.config.setup_done = false;
        let _ = save_config(&self.home, &st.config);
        drop(st);
        self.refresh_tray();
    }

    /// Stops cleanly: the round at hand ends, the status file is written,
    /// the local store stops serving.
    pub async fn shutdown(&self) {
        let mut st = self.state.lock().await;
        if let Some(r) = st.running.take() {
            stop_running(r).await;
        }
        if let Some(l) = st.local.take() {
            if let Err(e) = l.shutdown().await {
                tracing::warn!("stopping the local store: {e:#}");
            }
        }
    }

    /// Whether the daemon is syncing.
    pub async fn is_syncing(&self) -> bool {
        self.state.lock().await.running.as_ref().is_some_and(|r| r.daemon.is_some())
    }

    /// What the tray shows now.
    pub fn tray_view(&self) -> TrayView {
        self.tray.lock().expect("tray lock").clone()
    }

    fn refresh_tray(&self) {
        let view = self.tray_view();
        self.shell.update_tray(&view);
    }

    fn on_event(&self, engine: &CliEngine, event: &Event) {
        self.shell.emit(event);
        let notices = {
            let mut tray = self.tray.lock().expect("tray lock");
            let mut notifier = self.notifier.lock().expect("notifier lock");
            match event {
                Event::Status(s) => {
                    tray.set_status(s, engine.is_paused());
                    notifier.on_status(s)
                }
                Event::Activity(a) => {
                    tray.add_recent(a);
                    notifier.on_activity(a)
                }
            }
        };
        for n in notices {
            self.shell.notify(&n.title, &n.body);
        }
        self.refresh_tray();
    }

    /// Carries out a tray menu action: the menu calls this, and so do the tests.
    pub async fn perform(self: &Arc<Self>, action: TrayAction) -> Result<(), String> {
        match action {
            TrayAction::OpenWindow => {
                self.shell.show_window();
                Ok(())
            }
            TrayAction::OpenFolder => {
                let root = self.state.lock().await.config.root.clone();
                match root {
                    Some(r) if self.is_syncing().await => self.shell.open_path(&r),
                    _ => {
                        self.shell.show_window();
                        Err("Coffer is not set up yet".into())
                    }
                }
            }
            TrayAction::OpenRecent(i) => {
                let root = self.state.lock().await.config.root.clone().ok_or("Coffer is not set up yet")?;
                let rel = self.tray_view().recent.get(i).cloned().ok_or("no such recent file")?;
                let path = root.join(&rel);
                if path.exists() {
                    self.shell.open_path(&path)
                } else {
                    // Deleted since: show where it was.
                    self.shell.open_path(path.parent().unwrap_or(&root))
                }
            }
            TrayAction::TogglePause => {
                let engine = self.engine().await.ok_or("Coffer is not set up yet")?;
                let paused = !engine.is_paused();
                self.engine_request(Request::UpdateSettings(SettingsPatch {
                    paused: Some(paused),
                    ..Default::default()
                }))
                .await
                .map_err(|e| e.message)?;
                let status = coffer_engine::control::dispatch::status(&engine);
                self.tray.lock().expect("tray lock").set_status(&status, paused);
                self.refresh_tray();
                Ok(())
            }
            TrayAction::Quit => {
                self.shutdown().await;
                self.shell.exit();
                Ok(())
            }
        }
    }
}

/// The first pause before the daemon starts again after it stopped on its
/// own; it doubles with each stop in a row, up to [`RESTART_MOST`].
const RESTART_FIRST: Duration = Duration::from_secs(2);
/// The longest pause between restarts.
const RESTART_MOST: Duration = Duration::from_secs(300);
/// A daemon that ran this long before it stopped starts the count again.
const RESTART_RESET: Duration = Duration::from_secs(600);

/// How long to wait before the `failures`-th restart in a row.
fn restart_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    RESTART_FIRST.checked_mul(factor).map_or(RESTART_MOST, |d| d.min(RESTART_MOST))
}

/// Runs the daemon (`run`, given a future that fires on stop) until `stop`
/// says true. A daemon that ends on its own (its engine died, or the
/// folder's watcher could not start) has already put the reason in the
/// engine's status, which the tray, the window and a notification show;
/// it is started again after a pause that grows while it keeps stopping,
/// as a person would restart a crashed sync app.
async fn supervise<F, Fut>(mut run: F, stop: watch::Receiver<bool>) -> anyhow::Result<()>
where
    F: FnMut(futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // A dropped sender stops it too.
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let result = run(Box::pin(stopped(stop.clone()))).await;
        if *stop.borrow() {
            return result;
        }
        let e = result.err().unwrap_or_else(|| anyhow::anyhow!("the daemon ended"));
        failures = if started.elapsed() >= RESTART_RESET { 1 } else { failures.saturating_add(1) };
        let pause = restart_delay(failures);
        tracing::error!("sync stopped: {e:#}; starting it again in {} s", pause.as_secs());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(stop.clone()) => return Err(e),
        }
    }
}

async fn stop_running(r: Running) {
    if let Some((tx, task)) = r.daemon {
        let _ = tx.send(true);
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the daemon stopped with an error: {e:#}"),
            Err(e) => tracing::warn!("the daemon task failed: {e}"),
        }
    }
    r.forward.abort();
}

async fn forward_events(desktop: std::sync::Weak<Desktop>, engine: Arc<CliEngine>) {
    let mut stream = Box::pin(events::subscribe(engine.clone()));
    while let Some(ev) = stream.next().await {
        let Some(d) = desktop.upgrade() else { return };
        d.on_event(&engine, &ev);
    }
}

async fn check_quota(desktop: std::sync::Weak<Desktop>) {
    loop {
        let Some(d) = desktop.upgrade() else { return };
        if !d.is_syncing().await {
            return;
        }
        if let Ok(Response::Quota(q)) = d.engine_request(Request::GetQuota).await {
            let notices = d.notifier.lock().expect("notifier lock").on_quota(q.used, q.limit);
            for n in notices {
                d.shell.notify(&n.title, &n.body);
            }
        }
        drop(d);
        tokio::time::sleep(QUOTA_EVERY).await;
    }
}

fn config_path(home: &Home) -> PathBuf {
    home.path("desktop.json")
}

fn load_config(home: &Home) -> DesktopConfig {
    match std::fs::read(config_path(home)) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("desktop.json is damaged ({e}); starting the first run again");
            DesktopConfig::default()
        }),
        Err(_) => DesktopConfig::default(),
    }
}

fn save_config(home: &Home, config: &DesktopConfig) -> Result<(), ControlError> {
    let write = || -> std::io::Result<()> {
        let tmp = home.path(".desktop.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(config).expect("config serializes"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, config_path(home))
    };
    write().map_err(|e| err(ErrorCode::Internal, format!("could not save the app's settings: {e}")))
}

/// `~/Coffer`.
pub fn default_folder() -> PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.home_dir().join("Coffer"))
        .unwrap_or_else(|| PathBuf::from("Coffer"))
}

/// A server URL a person typed: `http(s)://host[:port]`, reachable, and
/// answering as a Coffer store.
async fn check_server_url(input: &str) -> Result<String, ControlError> {
    let url = input.trim().trim_end_matches('/').to_string();
    let bad = || {
        err(
            ErrorCode::BadRequest,
            format!("“{input}” is not a server address like https://coffer.example.com"),
        )
    };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    let accounts = coffer_engine::remote::Accounts::new(&url).map_err(|_| bad())?;
    accounts
        .probe()
        .await
        .map_err(|e| err(ErrorCode::StoreUnreachable, format!("no Coffer server answers at {url}: {e}")))?;
    Ok(url)
}

fn check_account_fields(email: &str, password: &str) -> Result<(), ControlError> {
    if email.trim().is_empty() {
        return Err(err(ErrorCode::BadRequest, "enter your email address"));
    }
    if password.is_empty() {
        return Err(err(ErrorCode::BadRequest, "enter a password"));
    }
    Ok(())
}

fn account_error(e: anyhow::Error) -> ControlError {
    let unreachable = e.chain().any(|c| {
        c.downcast_ref::<coffer_engine::remote::RemoteError>()
            .is_some_and(|r| matches!(r, coffer_engine::remote::RemoteError::Transport(_)))
    });
    err(if unreachable { ErrorCode::StoreUnreachable } else { ErrorCode::StoreRefused }, format!("{e:#}"))
}

/// The folder a person chose: `~` expanded, absolute, not a file, not
/// inside Coffer's own data.
fn check_folder(home: &Home, input: &str) -> Result<PathBuf, ControlError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(err(ErrorCode::BadRequest, "choose a folder"));
    }
    let expanded = match input.strip_prefix("~/").or(if input == "~" { Some("") } else { None }) {
        Some(rest) => directories::BaseDirs::new()
            .ok_or_else(|| err(ErrorCode::Internal, "cannot find your home folder"))?
            .home_dir()
            .join(rest),
        None => PathBuf::from(input),
    };
    if !expanded.is_absolute() {
        return Err(err(ErrorCode::BadRequest, format!("“{input}” is not a full path (like ~/Coffer)")));
    }
    let root = absolute(&expanded).map_err(|e| err(ErrorCode::BadRequest, e.to_string()))?;
    if root.parent().is_none() {
        return Err(err(ErrorCode::BadRequest, "the root of the disk cannot be the Coffer folder"));
    }
    if root.exists() && !root.is_dir() {
        return Err(err(ErrorCode::BadRequest, format!("{} is a file, not a folder", root.display())));
    }
    let data = absolute(home.dir()).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
    if root.starts_with(&data) || data.starts_with(&root) {
        return Err(err(
            ErrorCode::BadRequest,
            format!("{} holds Coffer's own data ({}); choose another folder", root.display(), data.display()),
        ));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn restart_pauses_double_up_to_a_bound() {
        let secs: Vec<u64> = [1, 2, 3, 4, 8, 9, 40, u32::MAX].map(|n| restart_delay(n).as_secs()).to_vec();
        assert_eq!(secs, [2, 4, 8, 16, 256, 300, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_stops_on_its_own_starts_again_until_told_to_stop() {
        let calls = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(StdMutex::new(Vec::new()));
        let (tx, rx) = watch::channel(false);
        let (c, s) = (calls.clone(), starts.clone());
        let task = tokio::spawn(supervise(
            move |stop| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                s.lock().unwrap().push(tokio::time::Instant::now());
                async move {
                    if n < 2 {
                        return Err(anyhow::anyhow!("the sync engine stopped unexpectedly (a bug): test"));
                    }
                    stop.await;
                    Ok(())
                }
            },
            rx,
        ));
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts[1] - starts[0], RESTART_FIRST, "first restart after the first pause");
        assert_eq!(starts[2] - starts[1], RESTART_FIRST * 2, "the pause doubles while it keeps stopping");
        tx.send(true).unwrap();
        task.await.unwrap().expect("stopped when told");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "not started again once told to stop");
    }

    #[tokio::test(start_paused = true)]
    async fn told_to_stop_during_a_pause_it_ends_with_the_reason() {
        let calls = Arc::new(AtomicU32::new(0));
        let (tx, rx) = watch::channel(false);
        let c = calls.clone();
        let task = tokio::spawn(supervise(
            move |_stop| {
                c.fetch_add(1, Ordering::SeqCst);
                async { Err(anyhow::anyhow!("the folder's watcher could not start")) }
            },
            rx,
        ));
        while calls.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(true).unwrap();
        let e = task.await.unwrap().expect_err("it had stopped on its own");
        assert!(e.to_string().contains("watcher"), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
