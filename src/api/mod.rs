//! The HTTP API, `/metrics` and the dashboard (axum), on `[api] listen`.
//!
//! Every route is declared with `#[utoipa::path]` and mounted through
//! `utoipa_axum::routes!`, so `/openapi.json` is generated from the same
//! code that serves (tests/api.rs checks both ways). Bearer tokens: `read`
//! may GET, `admin` may do everything; `/`, its assets, `/healthz`,
//! `/readyz` and `/openapi.json` need no token. Errors are
//! `application/problem+json` (RFC 9457). SQLite work goes through the
//! [`StoreHandle`]'s thread, never the executor.
//!
//! Owns: routes, authentication, the JSON shapes. Must not know: any switch.

mod dto;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{MessageId, MessageState, Presence, UserId, UserStatus};
use crate::store::api::{MessageFilter, Scope};
use crate::store::{NewUser, StoreError, StoreHandle};

pub use dto::*;

/// `[api]` in ivm.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Where the HTTP API, `/metrics` and the dashboard listen.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: StoreHandle,
    pub data_dir: PathBuf,
    /// Where a status set through the API is told (`ivm serve`: the
    /// presence side of the router, which calls a user who became
    /// available with what waits); None: nobody is told.
    pub status_changed: Option<tokio::sync::mpsc::UnboundedSender<StatusChange>>,
}

/// A user's own status changed through the API: their presence before and
/// after.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub user: UserId,
    pub before: Presence,
    pub after: Presence,
}

/// Largest page of the message list.
pub const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

// ---------------------------------------------------------------- problems

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ivm\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NoSuchMessage(_)
            | StoreError::NoSuchUser(_)
            | StoreError::NoSuchGroup(_) => StatusCode::NOT_FOUND,
            StoreError::UserExists(_) | StoreError::GroupExists(_) => StatusCode::CONFLICT,
            StoreError::Invalid { field, .. } if *field == "message" => StatusCode::CONFLICT,
            StoreError::Invalid { .. } | StoreError::NoSuchMembers(_) => StatusCode::BAD_REQUEST,
            StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::DataDir { .. } | StoreError::Sqlite(_) | StoreError::Migration(_) => {
                warn!("api: store error: {e}");
                return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "the store failed");
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn on_store<R, F>(state: &ApiState, f: F) -> ApiResult<R>
where
    R: Send + 'static,
    F: FnOnce(&mut crate::store::Store) -> Result<R, StoreError> + Send + 'static,
{
    Ok(state.store.call(f).await??)
}

// ---------------------------------------------------------------- auth

fn public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/dashboard.js" | "/dashboard.css" | "/healthz" | "/readyz" | "/openapi.json"
    )
}

async fn authenticate(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if public(request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a bearer token is needed (ivm token create)",
        ));
    };
    let scope = on_store(&state, move |s| s.check_token(&token)).await?;
    let Some(scope) = scope else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is unknown or revoked",
        ));
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if scope == Scope::Read && !reads {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a read token may only GET; this needs an admin token",
        ));
    }
    Ok(next.run(request).await)
}

// ---------------------------------------------------------------- the document

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ivm",
        description = "Instant voice messaging: users, groups, presence, messages, outbox, health and metrics."
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the document made from them.
pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(dashboard))
        .routes(routes!(dashboard_js))
        .routes(routes!(dashboard_css))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(list_users, add_user))
        .routes(routes!(get_user, remove_user))
        .routes(routes!(set_status))
        .routes(routes!(list_groups))
        .routes(routes!(get_group))
        .routes(routes!(presence))
        .routes(routes!(sessions))
        .routes(routes!(list_messages))
        .routes(routes!(get_message, delete_message))
        .routes(routes!(message_audio))
        .routes(routes!(outbox))
        .split_for_parts();
    let json = serde_json::to_string(&doc).unwrap_or_default();
    let router = router
        .fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::Extension(OpenApiJson(json.into())))
        .with_state(state);
    (router, doc)
}

#[derive(Clone)]
struct OpenApiJson(std::sync::Arc<str>);

/// Serve until `shutdown` turns true. Binding fails here, before serving.
pub async fn start(
    config: &ApiConfig,
    state: ApiState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    let (router, _) = router(state);
    info!(%address, "http api and dashboard listening");
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!("http api stopped: {e}");
        }
    });
    Ok((address, task))
}

/// Start the API beside `ivm serve`. A port already taken is logged as an
/// error and the switches are served all the same: calls matter more.
pub async fn beside_server(
    config: &ApiConfig,
    store: &StoreHandle,
    data_dir: &std::path::Path,
    status_changed: Option<tokio::sync::mpsc::UnboundedSender<StatusChange>>,
    shutdown: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let state = ApiState {
        store: store.clone(),
        data_dir: data_dir.to_owned(),
        status_changed,
    };
    match start(config, state, shutdown.clone()).await {
        Ok((_, task)) => Some(task),
        Err(e) => {
            tracing::error!(
                "http api: cannot listen on {}: {e} (set [api] listen)",
                config.listen
            );
            None
        }
    }
}

// ---------------------------------------------------------------- handlers

fn text(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The dashboard (no token needed to load it; it asks for one).
#[utoipa::path(get, path = "/", security(()), responses((status = 200, description = "The dashboard", content_type = "text/html")))]
async fn dashboard() -> Response {
    text("text/html; charset=utf-8", DASHBOARD_HTML)
}

#[utoipa::path(get, path = "/dashboard.js", security(()), responses((status = 200, description = "The dashboard's script", content_type = "text/javascript")))]
async fn dashboard_js() -> Response {
    text("text/javascript; charset=utf-8", DASHBOARD_JS)
}

#[utoipa::path(get, path = "/dashboard.css", security(()), responses((status = 200, description = "The dashboard's style", content_type = "text/css")))]
async fn dashboard_css() -> Response {
    text("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// Live: the process answers.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        switches: Vec::new(),
    })
}

/// Ready: every switch connected and the store answers a query.
#[utoipa::path(get, path = "/readyz", security(()), responses(
    (status = 200, body = Health),
    (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<ApiState>) -> ApiResult<Json<Health>> {
    let live = crate::metrics::global().live();
    let switches: Vec<SwitchStatus> = live
        .switches()
        .into_iter()
        .map(|(name, connected)| SwitchStatus { name, connected })
        .collect();
    on_store(&state, |s| s.counts())
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.detail))?;
    if !live.all_connected() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to every configured switch",
        ));
    }
    Ok(Json(Health {
        status: "ready".into(),
        switches,
    }))
}

/// Prometheus metrics (text exposition format); needs a token (read scope).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Metrics", content_type = "text/plain"),
    (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn metrics(State(state): State<ApiState>) -> ApiResult<Response> {
    let counts = on_store(&state, |s| s.counts()).await?;
    let body = crate::metrics::global().render(&counts);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/users", responses(
    (status = 200, body = Vec<UserDto>),
    (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_users(State(state): State<ApiState>) -> ApiResult<Json<Vec<UserDto>>> {
    let users = on_store(&state, |s| s.list_users()).await?;
    Ok(Json(users.into_iter().map(UserDto::from).collect()))
}

/// Add a user (admin).
#[utoipa::path(post, path = "/api/v1/users", request_body = NewUserDto, responses(
    (status = 201, body = UserDto),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn add_user(
    State(state): State<ApiState>,
    body: Result<Json<NewUserDto>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<UserDto>)> {
    let Json(user) = body?;
    let extension = user.extension.clone();
    let added = on_store(&state, move |s| {
        s.add_user(&NewUser {
            extension: &user.extension,
            name: &user.name,
            mobile: user.mobile.as_deref(),
            pin: user.pin.as_deref(),
        })?;
        s.user(&extension)
    })
    .await?;
    let added = added.ok_or_else(|| ApiError::not_found("the user vanished"))?;
    Ok((StatusCode::CREATED, Json(added.into())))
}

#[utoipa::path(get, path = "/api/v1/users/{extension}", params(("extension" = String, Path)), responses(
    (status = 200, body = UserDto),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_user(
    State(state): State<ApiState>,
    extension: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<UserDto>> {
    let Path(extension) = extension?;
    let detail = format!("no user with extension {extension}");
    let user = on_store(&state, move |s| s.user(&extension)).await?;
    user.map(|u| Json(u.into()))
        .ok_or_else(|| ApiError::not_found(detail))
}

/// Remove a user (admin).
#[utoipa::path(delete, path = "/api/v1/users/{extension}", params(("extension" = String, Path)), responses(
    (status = 204, description = "Removed"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove_user(
    State(state): State<ApiState>,
    extension: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(extension) = extension?;
    on_store(&state, move |s| s.remove_user(&extension)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a user's own status (admin), as their star codes do: `available`,
/// `dnd`, or `away` (for `away_seconds`, else until changed). A user who
/// becomes available with unheard messages is called with them, as after
/// a star code.
#[utoipa::path(put, path = "/api/v1/users/{extension}/status", params(("extension" = String, Path)),
    request_body = StatusDto, responses(
    (status = 200, body = PresenceRowDto),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn set_status(
    State(state): State<ApiState>,
    extension: Result<Path<String>, PathRejection>,
    body: Result<Json<StatusDto>, JsonRejection>,
) -> ApiResult<Json<PresenceRowDto>> {
    let Path(extension) = extension?;
    let Json(body) = body?;
    let status: UserStatus = body.status.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "status: `{}` is not one of available, dnd, away",
                body.status
            ),
        )
    })?;
    let user = extension.clone();
    let (before, after, row) = on_store(&state, move |s| {
        let now = crate::store::now_ms();
        let until = body
            .away_seconds
            .map(|seconds| now.saturating_add(i64::from(seconds) * 1000));
        let before = s.presence(&user, now)?;
        s.set_user_status(&user, status, until, now)?;
        let after = s.presence(&user, now)?;
        let row = s.presence_rows()?.into_iter().find(|r| r.extension == user);
        Ok((before, after, row))
    })
    .await?;
    info!(%status, "status set through the api");
    if let (Some(tell), Some(before), Some(after)) = (&state.status_changed, before, after) {
        let _ = tell.send(StatusChange {
            user: UserId::new(extension.clone()),
            before,
            after,
        });
    }
    let row =
        row.ok_or_else(|| ApiError::not_found(format!("no user with extension {extension}")))?;
    Ok(Json(row.into()))
}

#[utoipa::path(get, path = "/api/v1/groups", responses((status = 200, body = Vec<GroupDto>)))]
async fn list_groups(State(state): State<ApiState>) -> ApiResult<Json<Vec<GroupDto>>> {
    let groups = on_store(&state, |s| s.list_groups()).await?;
    Ok(Json(groups.into_iter().map(GroupDto::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/groups/{number}", params(("number" = String, Path)), responses(
    (status = 200, body = GroupDto),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_group(
    State(state): State<ApiState>,
    number: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<GroupDto>> {
    let Path(number) = number?;
    let detail = format!("no group {number}");
    let group = on_store(&state, move |s| s.group(&number)).await?;
    group
        .map(|g| Json(g.into()))
        .ok_or_else(|| ApiError::not_found(detail))
}

/// Device states as the switches reported them since ivm started, and the
/// store's presence rows.
#[utoipa::path(get, path = "/api/v1/presence", responses((status = 200, body = PresenceDto)))]
async fn presence(State(state): State<ApiState>) -> ApiResult<Json<PresenceDto>> {
    let stored = on_store(&state, |s| s.presence_rows()).await?;
    let devices = crate::metrics::global()
        .live()
        .devices()
        .into_iter()
        .map(|(endpoint, state)| DeviceDto {
            endpoint,
            state: crate::metrics::device_state_name(state).into(),
        })
        .collect();
    Ok(Json(PresenceDto {
        devices,
        stored: stored.into_iter().map(PresenceRowDto::from).collect(),
    }))
}

/// Messages being recorded or delivered right now.
#[utoipa::path(get, path = "/api/v1/sessions", responses((status = 200, body = Vec<MessageDto>)))]
async fn sessions(State(state): State<ApiState>) -> ApiResult<Json<Vec<MessageDto>>> {
    let live = on_store(&state, |s| s.live_messages()).await?;
    Ok(Json(live.into_iter().map(MessageDto::from).collect()))
}

/// Filters and paging of the message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages to this extension or number.
    pub to: Option<String>,
    /// Only messages from this extension or number.
    pub from: Option<String>,
    /// Only messages in this state: recording, complete, partial, failed.
    pub state: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The cursor: `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// Messages, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/messages", params(ListQuery), responses(
    (status = 200, body = MessagePage),
    (status = 400, body = Problem, content_type = "application/problem+json")))]
async fn list_messages(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<MessagePage>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let message_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<MessageState>().map_err(|_| {
            ApiError::bad_request("state must be recording, complete, partial or failed")
        })?),
    };
    let filter = MessageFilter {
        to: q.to,
        from: q.from,
        state: message_state,
        before: q.cursor,
        limit,
    };
    let items = on_store(&state, move |s| s.message_page(&filter)).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|m| m.id.0))
        .flatten();
    Ok(Json(MessagePage {
        items: items.into_iter().map(MessageDto::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", params(("id" = i64, Path)), responses(
    (status = 200, body = MessageDto),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_message(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<MessageDto>> {
    let Path(id) = id?;
    let found = on_store(&state, move |s| s.message_info(MessageId(id))).await?;
    found
        .map(|m| Json(m.into()))
        .ok_or_else(|| ApiError::not_found(format!("no message with id {id}")))
}

/// Delete a message (admin): its rows, its retrieval codes and its files.
#[utoipa::path(delete, path = "/api/v1/messages/{id}", params(("id" = i64, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn delete_message(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(id) = id?;
    let data_dir = state.data_dir.clone();
    on_store(&state, move |s| s.delete_message(MessageId(id), &data_dir)).await?;
    info!(message_id = id, "message deleted through the api");
    Ok(StatusCode::NO_CONTENT)
}

/// The finished message as WAV (the stored file, byte for byte).
#[utoipa::path(get, path = "/api/v1/messages/{id}/audio", params(("id" = i64, Path)), responses(
    (status = 200, description = "The message", content_type = "audio/wav"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn message_audio(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = id?;
    let wav = on_store(&state, move |s| s.message_wav(MessageId(id))).await?;
    let Some(wav) = wav else {
        return Err(ApiError::not_found(format!("no message with id {id}")));
    };
    let Some(wav) = wav else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the message has no WAV yet (still recording)",
        ));
    };
    let path = state.data_dir.join(&wav);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("the audio of message {id} is gone")))?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], Body::from(bytes)).into_response())
}

/// The notification outbox: items by channel and state, and its depth.
#[utoipa::path(get, path = "/api/v1/outbox", responses((status = 200, body = OutboxDto)))]
async fn outbox(State(state): State<ApiState>) -> ApiResult<Json<OutboxDto>> {
    let counts = on_store(&state, |s| s.counts()).await?;
    let depth = counts
        .outbox
        .iter()
        .filter(|(_, state, _)| state == "pending" || state == "sending")
        .map(|(_, _, n)| n)
        .sum();
    Ok(Json(OutboxDto {
        depth,
        items: counts
            .outbox
            .into_iter()
            .map(|(channel, state, count)| OutboxCount {
                channel,
                state,
                count,
            })
            .collect(),
    }))
}
