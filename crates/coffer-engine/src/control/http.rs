//! The loopback HTTP transport of the control API, for the headless daemon
//! and any browser: off unless asked for (`coffer sync --ui`, `coffer up`).
//!
//! - `POST /api`: one JSON [`Request`] in, one JSON [`Response`] out (or a
//!   [`ControlError`] with an HTTP status mapped in [`http_status`]);
//! - `GET /api/events`: the event stream as server-sent events;
//! - `GET /api/file?path=…`: a file of the sync folder, as a download (to
//!   open either side of a conflict);
//! - `GET /login?code=…`: a one-time login link: sets the token cookie and
//!   sends the browser to the UI;
//! - everything else: the built UI (`ui/dist`), which is public code.
//!
//! Defences, in [`guard`], before any handler runs:
//! - it listens on 127.0.0.1 only;
//! - `Host` must be `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding: a
//!   page from evil.example whose name now points at 127.0.0.1 still sends
//!   `Host: evil.example`);
//! - `Origin`, when sent, must be this very origin; `Sec-Fetch-Site`, when
//!   sent, must not be `cross-site`, and for `/api*` must be `same-origin`
//!   or `none` (CSRF, also from another port of this host);
//! - `/api*` needs the per-install token, as `Authorization: Bearer` or as
//!   the HttpOnly, SameSite=Strict cookie the login link sets (one cookie
//!   name per port, so two daemons on one machine do not clash);
//! - `POST /api` takes `application/json` only (no form can send it
//!   cross-origin without a preflight, which gets no CORS headers here).

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::{consume_login, same_secret, ui_token};
use super::dispatch::dispatch;
use super::dto::{ControlError, ErrorCode, Request};
use super::Control;
use crate::home::Home;
use crate::model::{RelPath, STATE_DIR};
use crate::remote::Remote;

/// The file in a sync root's state folder naming the running daemon's UI.
pub const ADDRESS_FILE: &str = "ui.json";

/// How to serve.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// The port on 127.0.0.1 (0: any free one).
    pub port: u16,
    /// The built UI (default: [`default_ui_dir`]).
    pub ui_dir: Option<PathBuf>,
}

/// A running transport; dropping it stops it.
#[derive(Debug)]
pub struct UiServer {
    addr: SocketAddr,
    home: Home,
    task: tokio::task::JoinHandle<()>,
}

impl UiServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its address, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A fresh one-time login link.
    pub fn login_url(&self) -> io::Result<String> {
        login_url(&self.home, &self.url())
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A one-time login link to the UI at `base` (ending in `/`).
pub fn login_url(home: &Home, base: &str) -> io::Result<String> {
    Ok(format!("{base}login?code={}", super::auth::mint_login(home)?))
}

/// What `.coffer/ui.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiAddress {
    /// The UI's address.
    pub url: String,
    /// The daemon serving it.
    pub pid: u32,
}

/// Records the running UI's address in the sync root (for `coffer ui`).
pub fn save_address(root: &Path, url: &str) -> io::Result<()> {
    let dir = root.join(STATE_DIR);
    let tmp = dir.join("ui.json.tmp");
    let body = serde_json::to_vec_pretty(&UiAddress { url: url.into(), pid: std::process::id() })?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, dir.join(ADDRESS_FILE))
}

/// The running UI's address, if a daemon recorded one.
pub fn load_address(root: &Path) -> io::Result<Option<UiAddress>> {
    match std::fs::read(root.join(STATE_DIR).join(ADDRESS_FILE)) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Forgets the address (the daemon stops).
pub fn remove_address(root: &Path) {
    let _ = std::fs::remove_file(root.join(STATE_DIR).join(ADDRESS_FILE));
}

/// Where the built UI is: `COFFER_UI_DIR`, else `ui/dist` beside the
/// binary's target folder (a source checkout), else the one this crate
/// was built from.
pub fn default_ui_dir() -> Option<PathBuf> {
    let has_index = |d: &Path| d.join("index.html").is_file();
    if let Some(d) = std::env::var_os("COFFER_UI_DIR").map(PathBuf::from) {
        return Some(d);
    }
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(|r| r.join("ui").join("dist")));
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist");
    from_exe.into_iter().chain([built]).find(|d| has_index(d))
}

/// The HTTP status of an error code: the one place this mapping lives.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Refused => StatusCode::CONFLICT,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotLoggedIn => StatusCode::UNAUTHORIZED,
        ErrorCode::StoreUnreachable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StoreRefused => StatusCode::BAD_GATEWAY,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(code: ErrorCode, message: &str) -> HttpResponse {
    let body = serde_json::to_vec(&ControlError::new(code, message)).unwrap_or_default();
    (http_status(code), [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What the guard checks against.
struct Gate {
    port: u16,
    token: Zeroizing<String>,
    cookie: String,
}

impl Gate {
    fn same_origin(&self, origin: &str) -> bool {
        origin == format!("http://127.0.0.1:{}", self.port)
            || origin == format!("http://localhost:{}", self.port)
    }

    fn host_ok(&self, host: &str) -> bool {
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v);
        bearer.or(cookie).is_some_and(|t| same_secret(t.as_bytes(), self.token.as_bytes()))
    }
}

/// Host, Origin and token checks (see the module doc).
async fn guard(State(gate): State<Arc<Gate>>, req: HttpRequest, next: Next) -> HttpResponse {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !gate.host_ok(host) {
        return error(ErrorCode::Forbidden, "wrong Host: open the UI at the address `coffer ui` prints");
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(|o| gate.same_origin(o)) {
            return error(ErrorCode::Forbidden, "requests from other sites are refused");
        }
    }
    let api = req.uri().path().starts_with("/api");
    // Browsers say where a request comes from: the API answers only this
    // origin and typed addresses (another port of this host is "same-site"
    // and would carry the cookie); the UI's files are public.
    if let Some(site) = h.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        if site == b"cross-site" || (api && site != b"same-origin" && site != b"none") {
            return error(ErrorCode::Forbidden, "requests from other sites are refused");
        }
    }
    if api && !gate.authorized(h) {
        return error(ErrorCode::Unauthorized, "not signed in: open the link `coffer ui` prints");
    }
    let mut resp = next.run(req).await;
    let hs = resp.headers_mut();
    hs.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    hs.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    hs.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

struct AppState<R: Remote> {
    ctl: Arc<Control<R>>,
    home: Home,
    gate: Arc<Gate>,
    ui_dir: Option<PathBuf>,
}

/// Starts the transport for `ctl` on 127.0.0.1. Needs the home folder
/// (the token lives there).
pub async fn serve<R: Remote + 'static>(ctl: Arc<Control<R>>, opts: HttpOptions) -> io::Result<UiServer> {
    let home = ctl.home().cloned().ok_or_else(|| io::Error::other("the UI needs a home folder"))?;
    let token = ui_token(&home)?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, opts.port)).await?;
    let addr = listener.local_addr()?;
    let gate = Arc::new(Gate { port: addr.port(), token, cookie: format!("coffer_ui_{}", addr.port()) });
    let state = Arc::new(AppState {
        ctl,
        home: home.clone(),
        gate: gate.clone(),
        ui_dir: opts.ui_dir.or_else(default_ui_dir),
    });
    let app = Router::new()
        .route("/api", post(api::<R>))
        .route("/api/events", get(events::<R>))
        .route("/api/file", get(file::<R>))
        .route("/login", get(login::<R>))
        .fallback(get(static_file::<R>))
        .with_state(state)
        .layer(middleware::from_fn_with_state(gate, guard));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the UI server stopped");
        }
    });
    Ok(UiServer { addr, home, task })
}

async fn api<R: Remote + 'static>(
    State(st): State<Arc<AppState<R>>>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return error(ErrorCode::BadRequest, "send application/json");
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(ErrorCode::BadRequest, &format!("not a request: {e}")),
    };
    match dispatch(&st.ctl, req).await {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&resp).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => error(e.code, &e.message),
    }
}

async fn events<R: Remote + 'static>(State(st): State<Arc<AppState<R>>>) -> HttpResponse {
    let stream = super::events::subscribe(st.ctl.engine().clone()).map(|ev| {
        Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&ev).unwrap_or_default()))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
}

async fn file<R: Remote + 'static>(
    State(st): State<Arc<AppState<R>>>,
    Query(q): Query<PathQuery>,
) -> HttpResponse {
    let Ok(rel) = RelPath::new(q.path.trim_matches('/')) else {
        return error(ErrorCode::BadRequest, "not a path in the sync folder");
    };
    let abs = st.ctl.engine().config().root.join(rel.as_str());
    // Only regular files, never through a link out of the folder.
    let mut p = st.ctl.engine().config().root.clone();
    for c in rel.as_str().split('/') {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return error(ErrorCode::Refused, "that is a link"),
            Ok(_) => {}
            Err(_) => return error(ErrorCode::NotFound, "no such file here"),
        }
    }
    let file = match tokio::fs::File::open(&abs).await {
        Ok(f) => f,
        Err(_) => return error(ErrorCode::NotFound, "no such file here"),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return error(ErrorCode::NotFound, "no such file here"),
    };
    // Streamed in 64 KiB pieces: a large file is never held in memory.
    let body = futures::stream::unfold(Some(file), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, io::Error>(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let name: String = rel
        .file_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' })
        .collect();
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let hs = resp.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    hs.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        hs.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[derive(Deserialize)]
struct LoginQuery {
    code: String,
}

async fn login<R: Remote + 'static>(
    State(st): State<Arc<AppState<R>>>,
    Query(q): Query<LoginQuery>,
) -> HttpResponse {
    if !consume_login(&st.home, &q.code) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link was already used or has expired. Run `coffer ui` for a new one.\n",
        )
            .into_response();
    }
    let cookie = format!("{}={}; HttpOnly; SameSite=Strict; Path=/", st.gate.cookie, st.gate.token.as_str());
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

const NO_UI: &str = "<!doctype html><meta charset=utf-8><title>Coffer</title>\
<p>The web UI is not built. Run <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>, or set COFFER_UI_DIR.</p>";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

async fn static_file<R: Remote + 'static>(
    State(st): State<Arc<AppState<R>>>,
    req: HttpRequest,
) -> HttpResponse {
    let Some(dir) = &st.ui_dir else {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], NO_UI).into_response();
    };
    let rel = req.uri().path().trim_start_matches('/');
    let clean = Path::new(rel).components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || rel.split('/').any(|s| s.starts_with('.')) {
        return error(ErrorCode::NotFound, "no such page");
    }
    let mut path = if rel.is_empty() { dir.join("index.html") } else { dir.join(rel) };
    if !path.is_file() {
        if Path::new(rel).extension().is_some() {
            return error(ErrorCode::NotFound, "no such page");
        }
        path = dir.join("index.html");
    }
    let Ok(data) = tokio::fs::read(&path).await else { return error(ErrorCode::NotFound, "no such page") };
    let mime = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    };
    let cache = if rel.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-store" };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, cache),
        ],
        data,
    )
        .into_response()
}
