//! The HTTP face of the [`Service`]: a thin axum shell, one handler per file.
//! Handlers only extract, call the service and wrap the answer; every
//! decision is the service's.
//!
//! Shared here:
//! - [`ApiError`]: every failure becomes an [`ErrorBody`] JSON with the status
//!   of its code ([`ErrorCode::http_status`]), including extractor failures
//!   (bad JSON, oversized bodies, bad path or query) and unknown routes.
//! - [`Auth`]: the `Authorization: Bearer` extractor.
//! - Body limits: small for JSON routes, larger for chunk uploads.
//! - Timeouts: a request must complete within `request_timeout` (a slow
//!   client sending its body is cut off with `timeout`); long-polls get their
//!   own hold time on top. Slow headers are bounded by the server's header
//!   read timeout (see [`crate::server`]).
//!
//! The endpoint table is in `docs/api.md`.

mod chunk_download;
mod chunks_get;
mod chunks_missing;
mod chunks_upload;
mod commit;
mod journal;
mod journal_wait;
mod login_finish;
mod login_start;
mod metrics;
mod previews;
mod register_finish;
mod register_start;
mod session_revoke;
mod sessions;
mod snapshot;
mod usage;
mod version;
mod versions;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use coffer_proto::api::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

use crate::service::{Caller, Service};
use crate::ServiceError;

/// Transport settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest JSON body, bytes (but a commit's).
    pub json_body_limit: usize,
    /// Largest commit body, bytes: room for the most chunk ids a commit may
    /// name (`MAX_CHUNK_REFS_PER_COMMIT`, about 67 bytes each in JSON) and
    /// the metadata of its changes.
    pub commit_body_limit: usize,
    /// Largest chunk-upload body, bytes.
    pub chunk_body_limit: usize,
    /// Longest time to receive and answer one request (long-polls excepted).
    pub request_timeout: Duration,
    /// Longest time to receive a request's headers.
    pub header_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            json_body_limit: 4 << 20,
            commit_body_limit: 16 << 20,
            chunk_body_limit: 64 << 20,
            request_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) service: Service,
    pub(crate) cfg: Arc<HttpConfig>,
}

/// Every error answer.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ServiceError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "internal error");
        }
        error_response(self.0.body())
    }
}

fn error_response(body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn rejection(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(ServiceError::PayloadTooLarge { limit })
    } else {
        ApiError(ServiceError::BadRequest(text))
    }
}

/// JSON body extractor whose failures are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e @ JsonRejection::BytesRejection(_)) => {
                Err(rejection(e.status(), e.body_text(), state.cfg.json_body_limit))
            }
            Err(e) => Err(ApiError(ServiceError::BadRequest(e.body_text()))),
        }
    }
}

/// Raw body extractor (chunk uploads) whose failures are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiBytes(pub axum::body::Bytes);

impl FromRequest<AppState> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|e: BytesRejection| rejection(e.status(), e.body_text(), state.cfg.chunk_body_limit))
    }
}

/// Query extractor whose failures are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError(ServiceError::BadRequest(e.body_text())))
    }
}

/// Path extractor whose failures are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError(ServiceError::BadRequest(e.body_text())))
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError(ServiceError::Unauthorized))?;
        Ok(Self(state.service.authenticate(token.trim()).await?))
    }
}

/// The client's address when the server knows it (behind a proxy, the
/// proxy's).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

async fn timeout_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut limit = state.cfg.request_timeout;
    if req.uri().path().ends_with("/journal/wait") || req.uri().path().ends_with("/previews/wait") {
        limit += state.service.config().max_long_poll;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError(ServiceError::Timeout).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError(ServiceError::NotFound("endpoint"))
}

async fn wrong_method() -> Response {
    let body = ErrorBody {
        code: ErrorCode::BadRequest,
        message: "method not allowed on this endpoint".into(),
        missing_chunks: vec![],
        retry_after_ms: None,
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// The API router over a service.
pub fn router(service: Service, cfg: HttpConfig) -> Router {
    let state = AppState { service, cfg: Arc::new(cfg.clone()) };
    let json = DefaultBodyLimit::max(cfg.json_body_limit);
    let v1 = Router::new()
        .route("/accounts/register/start", post(register_start::handle))
        .route("/accounts/register/finish", post(register_finish::handle))
        .route("/accounts/login/start", post(login_start::handle))
        .route("/accounts/login/finish", post(login_finish::handle))
        .route("/sessions", get(sessions::handle))
        .route("/sessions/{id}", delete(session_revoke::handle))
        .route("/usage", get(usage::handle))
        .route("/chunks/missing", post(chunks_missing::handle))
        .route("/chunks/get", post(chunks_get::handle))
        .route("/journal", get(journal::handle))
        .route("/journal/wait", get(journal_wait::handle))
        .route("/previews", post(previews::post))
        .route("/previews/wait", get(previews::wait))
        .route("/snapshot", get(snapshot::handle))
        .route("/entries/{entry_id}/versions", get(versions::handle))
        .route("/entries/{entry_id}/versions/{revision}", get(version::handle))
        .layer(json)
        .route("/commit", post(commit::handle).layer(DefaultBodyLimit::max(cfg.commit_body_limit)))
        .route("/chunks", post(chunks_upload::handle).layer(DefaultBodyLimit::max(cfg.chunk_body_limit)))
        .route("/chunks/{id}", get(chunk_download::handle));
    Router::new()
        .nest(coffer_proto::api::API_PREFIX, v1)
        .route("/metrics", get(metrics::handle))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(state.clone(), timeout_layer))
        .with_state(state)
}
