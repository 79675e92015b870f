//! The HTTP API (axum): health, readiness, metrics, server info, sessions and invites.
//! Errors are JSON `{"error": "..."}` with a fitting status code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshwork_protocol::{Role, Signer as _};
use serde::{Deserialize, Serialize};

use crate::data::{DataDir, SessionMeta, parse_session_id, random_bytes, token_sha256};
use crate::driver::{self, SessionInfo};
use crate::metrics::Metrics;
use crate::{ServerContext, mint_ticket};

/// Longest invite validity the API grants.
const MAX_INVITE_TTL_S: u64 = 30 * 86_400;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Sessions, keys, addresses.
    pub ctx: Arc<ServerContext>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set once every listener is up.
    pub ready: Arc<AtomicBool>,
    /// The data directory (for recording new sessions).
    pub data: Arc<Mutex<DataDir>>,
    /// The WebRTC endpoint (signaling hands it offers).
    pub rtc: crate::webrtc::RtcHandle,
}

/// The router.
pub fn router(state: AppState) -> Router {
    let web = state
        .ctx
        .settings
        .web_dir
        .clone()
        .filter(|d| d.join("index.html").is_file());
    let api = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/server", get(server_info))
        .route("/api/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/api/v1/sessions/{id}/invites",
            post(create_invite).get(list_invites),
        )
        .route(
            "/api/v1/sessions/{id}/invites/{invite}",
            axum::routing::delete(revoke_invite),
        )
        .route("/api/v1/backup", post(create_backup))
        .route("/api/v1/sessions/{id}/export.glb", get(export_glb))
        .route("/api/v1/sessions/{id}/history", get(history))
        .route("/api/v1/sessions/{id}/members", get(members))
        .route(
            "/api/v1/sessions/{id}/members/{author}",
            axum::routing::delete(remove_member),
        )
        .route(
            "/api/v1/sessions/{id}/members/{author}/role",
            axum::routing::put(set_member_role),
        )
        .route(
            "/api/v1/sessions/{id}/assets/{asset}",
            get(asset_status)
                .put(asset_chunk)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::assets::MAX_CHUNK_BYTES.saturating_add(1024),
                )),
        )
        .route("/api/v1/sessions/{id}/ws", get(crate::ws::upgrade))
        .route(
            "/api/v1/sessions/{id}/rtc",
            post(rtc_offer).layer(axum::extract::DefaultBodyLimit::max(
                crate::webrtc::MAX_SDP_BYTES.saturating_add(1024),
            )),
        )
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async {
                ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
            }),
        );
    match web {
        // The editor: static files; unknown paths get the JSON 404 of the API.
        Some(dir) => api
            .fallback_service(tower_http::services::ServeDir::new(dir).not_found_service(
                axum::routing::any(|| async {
                    ApiError(StatusCode::NOT_FOUND, "no such file".into())
                }),
            ))
            .with_state(state),
        None => api
            .route("/", get(index))
            .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
            .with_state(state),
    }
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Without a built editor, `/` says what this server is, how to get the editor, and where the
/// API is: never a blank page.
async fn index(State(s): State<AppState>) -> Response {
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Meshwork</title>\
         <h1>Meshwork session server {}</h1>\
         <p>The server is running, but the browser editor bundle was not found (looked for \
         <code>{}</code>). Build and serve it with <code>cargo xtask run</code>, or build it with \
         <code>npm ci &amp;&amp; npm run build</code> in <code>client-web/</code> and pass \
         <code>--web-dir client-web/dist</code>. Native \
         clients join over QUIC at <code>{}</code> with a ticket from \
         <code>meshwork-server invite</code>; browsers join over WebRTC (signaling: \
         <code>POST /api/v1/sessions/{{id}}/rtc</code>) or the WebSocket fallback \
         (<code>/api/v1/sessions/{{id}}/ws</code>).</p>\
         <ul><li><a href=/api/v1/server>/api/v1/server</a> (version, certificate fingerprint)</li>\
         <li><a href=/metrics>/metrics</a> (Prometheus)</li><li><a href=/healthz>/healthz</a></li></ul>",
        env!("CARGO_PKG_VERSION"),
        s.ctx.settings.web_dir.as_ref().map_or_else(
            || crate::config::DEFAULT_WEB_DIR.to_owned(),
            |d| d.display().to_string()
        ),
        s.ctx.public_quic_addr
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::SeqCst) && !s.ctx.router.is_shutting_down() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Serialize)]
struct ServerInfo {
    name: &'static str,
    version: &'static str,
    protocol_version: u16,
    quic_addr: String,
    cert_sha256: String,
    server_public_key: String,
    default_session: String,
    webrtc: WebRtcInfo,
}

#[derive(Serialize)]
struct WebRtcInfo {
    /// Where browsers' data channels go (one UDP port for every peer).
    udp_addr: String,
    /// `RTCConfiguration.iceServers`: STUN always, TURN credentials when the request carries a
    /// valid join ticket.
    ice_servers: Vec<crate::ice::IceServer>,
    /// `POST` an SDP offer here, `{id}` being the session.
    signaling: &'static str,
}

#[derive(Deserialize)]
struct InfoQuery {
    /// A join ticket (`mwj1_...`): when valid, TURN credentials are included.
    ticket: Option<String>,
}

/// The invite's short id when `ticket` holds a valid, unexpired invite of this server.
fn invited_user(s: &AppState, ticket: &str) -> Option<String> {
    let ticket = meshwork_protocol::wire::JoinTicket::from_text(ticket.trim()).ok()?;
    let session = ticket.invite.claimed_session()?;
    let body = ticket
        .invite
        .verify(&s.ctx.server_key.public_key(), session, driver::now_ms())
        .ok()?;
    Some(hex::encode(body.invite_id.get(..8)?))
}

async fn server_info(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<InfoQuery>,
    headers: HeaderMap,
) -> Json<ServerInfo> {
    let ticket = q.ticket.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    });
    let user = ticket.as_deref().and_then(|t| invited_user(&s, t));
    let now_s = driver::now_ms() / 1000;
    Json(ServerInfo {
        name: "meshwork",
        version: env!("CARGO_PKG_VERSION"),
        protocol_version: meshwork_protocol::PROTOCOL_VERSION,
        quic_addr: s.ctx.public_quic_addr.clone(),
        cert_sha256: hex::encode(s.ctx.cert_sha256),
        server_public_key: hex::encode(s.ctx.server_key.public_key().0),
        default_session: s.ctx.default_session.to_string(),
        webrtc: WebRtcInfo {
            udp_addr: s.rtc.local_addr().to_string(),
            ice_servers: crate::ice::ice_servers(&s.ctx.settings, user.as_deref(), now_s),
            signaling: "/api/v1/sessions/{id}/rtc",
        },
    })
}

#[derive(Deserialize)]
struct SdpIn {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

#[derive(Serialize)]
struct SdpOut {
    #[serde(rename = "type")]
    kind: &'static str,
    sdp: String,
}

/// WebRTC signaling, non-trickle: the browser's complete offer in, the server's complete answer
/// out (`{"type": "...", "sdp": "..."}` both ways). The join handshake then runs in-band on the
/// `log` channel, as on every transport.
async fn rtc_offer(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Bytes,
) -> Result<Json<SdpOut>, ApiError> {
    let refuse = |status: StatusCode, reason: &str, message: String| {
        s.metrics
            .rtc_signaling_errors_total
            .with_label_values(&[reason])
            .inc();
        ApiError(status, message)
    };
    let session = parse_session_id(&id)
        .ok()
        .and_then(|sid| s.ctx.router.get(sid))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no session {id}")))?;
    let offer: SdpIn = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON {{\"type\": \"offer\", \"sdp\": \"...\"}}: {e}"),
        )
    })?;
    if offer.kind != "offer" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected an SDP offer, got type {:?}", offer.kind),
        ));
    }
    if offer.sdp.len() > crate::webrtc::MAX_SDP_BYTES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!(
                "the SDP offer is {} bytes; the limit is {}",
                offer.sdp.len(),
                crate::webrtc::MAX_SDP_BYTES
            ),
        ));
    }
    let Some(slot) = s.ctx.router.admit(peer.ip()) else {
        s.metrics.rejected("per_address_limit");
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address".into(),
        ));
    };
    // The endpoint counts its own refusals.
    match s.rtc.answer(offer.sdp, session, slot).await {
        Ok(sdp) => Ok(Json(SdpOut {
            kind: "answer",
            sdp,
        })),
        Err(e) => {
            let status = match e {
                crate::webrtc::SignalError::BadSdp(_) => StatusCode::BAD_REQUEST,
                crate::webrtc::SignalError::TooManyPeers(_)
                | crate::webrtc::SignalError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                crate::webrtc::SignalError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError(status, e.to_string()))
        }
    }
}

fn require_admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "send the admin token as `Authorization: Bearer <token>`".into(),
            )
        })?;
    // Compare digests, not the token: no early exit on the secret's bytes.
    if token_sha256(token.trim()) == s.ctx.admin_token_sha256 {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "the admin token is not valid".into(),
        ))
    }
}

async fn list_sessions(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionInfo>>, ApiError> {
    require_admin(&s, &headers)?;
    let mut out = Vec::new();
    for handle in s.ctx.router.all() {
        if let Some(info) = handle.info().await {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(Json(out))
}

#[derive(Deserialize)]
struct NewSession {
    name: String,
}

async fn create_session(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<NewSession>>,
) -> Result<(StatusCode, Json<SessionMeta>), ApiError> {
    require_admin(&s, &headers)?;
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"name\": \"...\"}".into(),
        ));
    };
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.len() > meshwork_protocol::command::MAX_NAME_BYTES {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name must be 1 to 256 bytes".into(),
        ));
    }
    let id_bytes: [u8; 16] =
        random_bytes().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let meta = SessionMeta {
        id: hex::encode(id_bytes),
        name,
    };
    {
        let mut data = s
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        data.add_session(meta.clone())
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let session = meshwork_protocol::SessionId(id_bytes);
    let seed =
        random_bytes().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let new = meshwork_session::Session::new(s.ctx.session_config(session), seed, driver::now_ms());
    let chain = crate::store::writer::Chain {
        name: meta.name.clone(),
        position: 0,
        head: [0; 32],
        since_checkpoint: 0,
    };
    let handle = s
        .ctx
        .run_session(new, meta.name.clone(), chain, &s.metrics)
        .await;
    s.ctx.router.add(handle);
    Ok((StatusCode::CREATED, Json(meta)))
}

#[derive(Deserialize)]
struct NewInvite {
    role: Role,
    #[serde(default)]
    ttl_s: Option<u64>,
    /// Most people (new keys) it admits; default: the server's `--max-keys-per-invite`.
    #[serde(default)]
    max_uses: Option<u32>,
}

#[derive(Serialize)]
struct InviteOut {
    session: String,
    role: Role,
    expires_at_ms: u64,
    /// Its id (hex): what revoking it names.
    invite_id: String,
    /// Most people it admits (`null`: the server's default).
    max_uses: Option<u32>,
    /// Paste into a native client (carries the address and the certificate fingerprint).
    ticket: String,
}

async fn create_invite(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<NewInvite>>,
) -> Result<(StatusCode, Json<InviteOut>), ApiError> {
    require_admin(&s, &headers)?;
    let session =
        parse_session_id(&id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    if s.ctx.router.get(session).is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no session {id}")));
    }
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"role\": \"viewer|editor|admin\", \"ttl_s\": 86400}".into(),
        ));
    };
    let ttl_s = body.ttl_s.unwrap_or(86_400).clamp(1, MAX_INVITE_TTL_S);
    let expires_at_ms = driver::now_ms().saturating_add(ttl_s.saturating_mul(1000));
    let ticket = mint_ticket(
        &s.ctx.server_key,
        &s.ctx.public_quic_addr,
        s.ctx.cert_sha256,
        session,
        body.role,
        expires_at_ms,
    )
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let invite_id = ticket
        .invite
        .claimed_body()
        .map(|b| b.invite_id)
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "minted no id".into()))?;
    if body.max_uses == Some(0) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "max_uses must be at least 1".into(),
        ));
    }
    // The session learns the invite's own limit before anyone can use it (this answer is what
    // hands the link out).
    let record = meshwork_session::InviteRecord {
        invite: invite_id,
        role: body.role,
        expires_at_ms,
        max_keys: body.max_uses,
        revoked_at_ms: None,
        keys: Vec::new(),
    };
    let handle = session_handle(&s, session, &id)?;
    if !handle
        .invite_input(meshwork_session::Input::Invite(record))
        .await
    {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(InviteOut {
            session: id,
            role: body.role,
            expires_at_ms,
            invite_id: hex::encode(invite_id),
            max_uses: body.max_uses,
            ticket: ticket.to_text(),
        }),
    ))
}

/// The running session `session` (`id` as the request named it), or 404.
fn session_handle(
    s: &AppState,
    session: meshwork_protocol::SessionId,
    id: &str,
) -> Result<driver::SessionHandle, ApiError> {
    s.ctx
        .router
        .get(session)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no session {id}")))
}

/// An invite as the API lists it.
#[derive(Serialize)]
struct InviteListed {
    invite_id: String,
    role: Role,
    expires_at_ms: u64,
    /// `null`: the server's default.
    max_uses: Option<u32>,
    /// People (new keys) it admitted.
    uses: usize,
    revoked_at_ms: Option<u64>,
}

/// The session's invites that have limits, uses or a revocation (admin).
async fn list_invites(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<InviteListed>>, ApiError> {
    require_admin(&s, &headers)?;
    let session =
        parse_session_id(&id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let handle = session_handle(&s, session, &id)?;
    let records = handle.invites().await.ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        )
    })?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| InviteListed {
                invite_id: hex::encode(r.invite),
                role: r.role,
                expires_at_ms: r.expires_at_ms,
                max_uses: r.max_keys,
                uses: r.keys.len(),
                revoked_at_ms: r.revoked_at_ms,
            })
            .collect(),
    ))
}

/// Revokes an invite (admin): it admits no one from now on. 204 once the session has it (the
/// store writes it with the session's next batch).
async fn revoke_invite(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, invite)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&s, &headers)?;
    let session =
        parse_session_id(&id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let invite: [u8; 16] = hex::decode(invite.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "an invite id is 32 hex digits (the `invite_id` the invite was minted with)".into(),
            )
        })?;
    let handle = session_handle(&s, session, &id)?;
    if !handle
        .invite_input(meshwork_session::Input::RevokeInvite { invite })
        .await
    {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct BackupOut {
    path: String,
    records: u64,
}

/// Online backup: the store writer dumps every tree between two commits (so the copy is
/// consistent) into `<data dir>/backups/`.
async fn create_backup(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<BackupOut>), ApiError> {
    require_admin(&s, &headers)?;
    let root = s
        .data
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .root
        .clone();
    let dir = root.join("backups");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let path = dir.join(format!("backup-{}.mwb", driver::now_ms()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = crate::store::writer::StoreCmd::Backup {
        path: path.clone(),
        reply: tx,
    };
    s.ctx.store.tx.send(cmd).await.map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is stopped".into(),
        )
    })?;
    let records = rx
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is stopped".into(),
            )
        })?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        StatusCode::CREATED,
        Json(BackupOut {
            path: path.display().to_string(),
            records,
        }),
    ))
}

/// Exports running at once (each replays a log and encodes a scene on a blocking thread).
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[derive(Deserialize)]
struct ExportQuery {
    /// A join ticket of this session (members), unless the admin token or the
    /// `X-Meshwork-Ticket` header is sent.
    ticket: Option<String>,
    /// Export the state after this many entries (default: all).
    at: Option<u64>,
    /// Only these entities: ids separated by commas (`entity#<hex>` or the hex; default: all).
    entities: Option<String>,
}

/// Parses the session id and lets through a member (a valid, unexpired join ticket of this
/// session: `X-Meshwork-Ticket` header, or `ticket` from the query) or the admin token.
fn member_or_admin(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    query_ticket: Option<String>,
) -> Result<meshwork_protocol::SessionId, ApiError> {
    let session =
        parse_session_id(id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    // The editor sends its ticket in a header (a query string ends up in access logs).
    let ticket = headers
        .get("x-meshwork-ticket")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query_ticket);
    let member = ticket.as_deref().is_some_and(|t| {
        meshwork_protocol::wire::JoinTicket::from_text(t.trim())
            .ok()
            .filter(|ticket| ticket.invite.claimed_session() == Some(session))
            .and_then(|_| invited_user(s, t))
            .is_some()
    });
    if !member {
        require_admin(s, headers).map_err(|e| {
            if ticket.is_some() {
                ApiError(
                    StatusCode::FORBIDDEN,
                    "the ticket is not a valid, unexpired invite to this session".into(),
                )
            } else {
                e
            }
        })?;
    }
    if s.ctx.router.get(session).is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no session {id}")));
    }
    Ok(session)
}

/// A member whose ticket grants at least the editor role, or the admin: who may upload.
fn editor_or_admin(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<meshwork_protocol::SessionId, ApiError> {
    let session = member_or_admin(s, headers, id, None)?;
    if require_admin(s, headers).is_ok() {
        return Ok(session);
    }
    let role = headers
        .get("x-meshwork-ticket")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| meshwork_protocol::wire::JoinTicket::from_text(t.trim()).ok())
        .and_then(|t| t.invite.claimed_body())
        .map(|b| b.role);
    if role.is_some_and(|r| r >= Role::Editor) {
        Ok(session)
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "importing needs an editor's invite; yours is view only".into(),
        ))
    }
}

fn parse_asset_id(text: &str) -> Result<meshwork_protocol::command::AssetId, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a SHA-256 in hex (64 characters)"),
        )
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(meshwork_protocol::command::AssetId)
        .map_err(|_| bad())
}

/// What the server has of an asset: where to resume an upload, or the stored file's entities.
async fn asset_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, asset)): Path<(String, String)>,
) -> Result<Json<crate::assets::AssetStatus>, ApiError> {
    let session = member_or_admin(&s, &headers, &id, None)?;
    let asset = parse_asset_id(&asset)?;
    s.ctx
        .assets
        .status(session, asset)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no upload of {asset} yet")))
}

/// One chunk of an upload (see `crate::assets`); the last one stores the file.
async fn asset_chunk(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, asset)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::assets::{Appended, UploadError};
    let session = editor_or_admin(&s, &headers, &id)?;
    let asset = parse_asset_id(&asset)?;
    let number = |name: &str| -> Result<usize, ApiError> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("send the `{name}` header (a byte count)"),
                )
            })
    };
    let offset = number("upload-offset")?;
    let length = number("upload-length")?;
    let chunk_sha = headers
        .get("x-chunk-sha256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v.trim()).ok())
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "send the chunk's SHA-256 in hex as `X-Chunk-Sha256`".into(),
            )
        })?;
    let settings = &s.ctx.settings;
    let chunks = s.metrics.asset_chunks_total.clone();
    let refused = |e: UploadError| {
        chunks.with_label_values(&[e.outcome()]).inc();
        let status = match e {
            UploadError::Offset { .. } => StatusCode::CONFLICT,
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::TooMany(_) => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            UploadError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            UploadError::Import(_) | UploadError::Empty | UploadError::Entity { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            UploadError::ChunkHash | UploadError::FileHash(_) | UploadError::Length(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        ApiError(status, e.to_string())
    };
    let appended = s
        .ctx
        .assets
        .append(
            session,
            asset,
            offset,
            length,
            &body,
            chunk_sha,
            settings.max_asset_bytes,
            settings.max_assets,
        )
        .map_err(refused)?;
    let outcome = match &appended {
        Appended::More(_) => "accepted",
        Appended::Stored(_) => "already_stored",
        Appended::Whole(_) => "stored",
    };
    let whole = match appended {
        Appended::More(received) => {
            chunks.with_label_values(&[outcome]).inc();
            return Ok(Json(crate::assets::AssetStatus {
                received,
                length,
                complete: false,
                entities: Vec::new(),
            })
            .into_response());
        }
        Appended::Stored(status) => {
            chunks.with_label_values(&[outcome]).inc();
            return Ok(Json(status).into_response());
        }
        Appended::Whole(bytes) => bytes,
    };
    // Hashing and reading the file are CPU work: off the async workers.
    let max = settings.max_asset_bytes;
    let limits = s.ctx.session_config(session).limits;
    let read = tokio::task::spawn_blocking(move || {
        crate::assets::read_upload(asset, &whole, max, &limits)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(refused)?;
    let bytes = read
        .encode()
        .map_err(|e| refused(UploadError::Store(e.to_string())))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stopped = || refused(UploadError::Store("the store is stopped".into()));
    s.ctx
        .store
        .tx
        .send(crate::store::writer::StoreCmd::PutAsset {
            session,
            asset,
            bytes,
            reply: tx,
        })
        .await
        .map_err(|_| stopped())?;
    rx.await
        .map_err(|_| stopped())?
        .map_err(|e| refused(UploadError::Store(e)))?;
    let read = Arc::new(read);
    if let Some(handle) = s.ctx.router.get(session) {
        handle.provide_asset(asset, read.clone()).await;
    }
    s.ctx.assets.note_stored(session, asset, &read, length);
    chunks.with_label_values(&[outcome]).inc();
    let status = s
        .ctx
        .assets
        .status(session, asset)
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "lost the asset".into()))?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    /// A join ticket of this session, unless sent as `X-Meshwork-Ticket` or the admin token.
    ticket: Option<String>,
    /// Steps with a serial below this (the previous page's `next_before`).
    before: Option<u64>,
    /// Steps per page (default 50, at most 200).
    limit: Option<usize>,
    /// Only steps that changed this entity (`entity#<hex>`, the hex, or the decimal number).
    entity: Option<String>,
    /// With `entity`: only steps that changed this element, `<lamport>.<author>.<index>`.
    element: Option<String>,
}

/// Parses an element id written `<lamport>.<author>.<index>`.
fn parse_element(text: &str) -> Result<meshwork_protocol::editmesh::ElementId, String> {
    let bad = || format!("bad element id {text:?} (expected <lamport>.<author>.<index>)");
    let mut parts = text.trim().split('.');
    let mut next = || parts.next().ok_or_else(bad);
    let lamport = next()?.parse::<u64>().map_err(|_| bad())?;
    let author = next()?.parse::<u32>().map_err(|_| bad())?;
    let index = next()?.parse::<u32>().map_err(|_| bad())?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(meshwork_protocol::editmesh::ElementId {
        by: meshwork_protocol::CommandId {
            lamport,
            author: meshwork_protocol::AuthorId(author),
        },
        index,
    })
}

/// The session's undo history, newest first and paged: who did what and when, whether it is
/// undone, and with `entity` (and `element`) who last changed it. For members and the admin.
async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HistoryParams>,
) -> Result<Json<meshwork_session::HistoryPage>, ApiError> {
    let session = member_or_admin(&s, &headers, &id, q.ticket.clone())?;
    let entity = q
        .entity
        .as_deref()
        .map(|t| {
            t.trim()
                .parse::<u64>()
                .map(meshwork_protocol::EntityId)
                .or_else(|_| crate::export::parse_entity_id(t))
        })
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let element = q
        .element
        .as_deref()
        .map(parse_element)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    if element.is_some() && entity.is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "an element filter needs the entity it belongs to".into(),
        ));
    }
    let query = meshwork_session::HistoryQuery {
        before: q.before,
        limit: q.limit.unwrap_or(50),
        entity,
        element,
    };
    let gone = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        )
    };
    let handle = s.ctx.router.get(session).ok_or_else(gone)?;
    handle.history(query).await.map(Json).ok_or_else(gone)
}

/// The session's members: author id, role as it now stands, display name, connected now, and
/// whether an admin set the role. For members and the admin.
async fn members(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<InfoQuery>,
) -> Result<Json<Vec<meshwork_session::MemberInfo>>, ApiError> {
    let session = member_or_admin(&s, &headers, &id, q.ticket)?;
    let gone = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        )
    };
    let handle = s.ctx.router.get(session).ok_or_else(gone)?;
    handle.members().await.map(Json).ok_or_else(gone)
}

/// `PUT …/members/{author}/role`.
#[derive(Deserialize)]
struct RoleIn {
    role: Role,
}

/// `DELETE …/members/{author}`.
#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    revoke_invite: bool,
}

/// What a membership change with the admin token answers: the signed entry that carries it.
#[derive(Serialize)]
struct MembershipOut {
    /// The entry's Lamport time and author (the server's own member id).
    lamport: u64,
    author: u32,
}

/// A role change or removal with the admin token: the server signs it as its own member and it
/// goes through the log like an in-session admin's (`Session::admin_command`). 200 with the
/// entry once ordered (carried out when durable, moments later); 404 for an unknown member,
/// 409 for a refusal.
async fn admin_membership(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    author: &str,
    command: impl FnOnce(meshwork_protocol::AuthorId) -> meshwork_protocol::Command,
) -> Result<Json<MembershipOut>, ApiError> {
    require_admin(s, headers)?;
    let session =
        parse_session_id(id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let member = author
        .trim()
        .parse::<u32>()
        .map(meshwork_protocol::AuthorId)
        .map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "a member is named by its author id (a number, as `GET …/members` lists it)".into(),
            )
        })?;
    let handle = session_handle(s, session, id)?;
    let known = handle
        .members()
        .await
        .is_some_and(|all| all.iter().any(|m| m.author == member));
    if !known {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no member {} in session {id}", member.0),
        ));
    }
    match handle.admin_command(command(member)).await {
        Some(Ok(entry)) => Ok(Json(MembershipOut {
            lamport: entry.lamport,
            author: entry.author.0,
        })),
        Some(Err(refusal)) => Err(ApiError(StatusCode::CONFLICT, refusal)),
        None => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has stopped".into(),
        )),
    }
}

async fn set_member_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, author)): Path<(String, String)>,
    Json(body): Json<RoleIn>,
) -> Result<Json<MembershipOut>, ApiError> {
    admin_membership(&s, &headers, &id, &author, |member| {
        meshwork_protocol::Command::SetRole {
            author: member,
            role: body.role,
        }
    })
    .await
}

async fn remove_member(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, author)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<RemoveQuery>,
) -> Result<Json<MembershipOut>, ApiError> {
    admin_membership(&s, &headers, &id, &author, |member| {
        meshwork_protocol::Command::Kick {
            author: member,
            reason: q.reason,
            revoke_invite: q.revoke_invite,
        }
    })
    .await
}

/// The session's durable scene as GLB (see `crate::export`): for the admin token, or for a
/// valid, unexpired join ticket of this session (`X-Meshwork-Ticket` header, or `?ticket=`).
async fn export_glb(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let session = member_or_admin(&s, &headers, &id, q.ticket.clone())?;
    // A replay and an encoding per request: at most this many at once, the rest told to retry.
    let Ok(_permit) = EXPORTS.try_acquire() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(serde_json::json!({
                "error": "exports are busy (at most 2 at once); retry in a second"
            })),
        )
            .into_response());
    };
    let reader = s.ctx.store.reader.clone();
    let window = s.ctx.settings.log_window;
    let only = q
        .entities
        .as_deref()
        .map(|list| {
            list.split(',')
                .filter(|t| !t.trim().is_empty())
                .map(crate::export::parse_entity_id)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let server_key = s.ctx.server_key.public_key();
    let at = q.at;
    // Replaying and encoding are CPU work: off the async workers.
    let glb = tokio::task::spawn_blocking(move || {
        // Streams the log from the store beside the writer: commits go on meanwhile.
        let (scene, provenance) =
            crate::export::scene_at(reader.as_ref(), session, server_key, at, window)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
        let exported =
            crate::export::export(&scene, only.as_deref(), &provenance).map_err(|e| {
                let status = match e {
                    crate::export::ExportError::NoSuchEntity(_) => StatusCode::NOT_FOUND,
                    crate::export::ExportError::Write(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError(status, e.to_string())
            })?;
        exported
            .to_glb()
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let name = format!("attachment; filename=\"meshwork-{session}.glb\"");
    Ok((
        [
            (header::CONTENT_TYPE, "model/gltf-binary".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        glb,
    )
        .into_response())
}
