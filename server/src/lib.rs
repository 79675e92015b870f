//! `meshwork-server`: the daemon around the sans-IO session core. The only crate that does
//! server I/O: sockets (QUIC, HTTP), the data directory, the clock, randomness, tasks.
//!
//! [`start`] takes bound listeners (tests bind `127.0.0.1:0`) and returns a [`ServerHandle`]
//! with the real addresses and `shutdown_and_wait`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_protocol::wire::{Invite, InviteBody, JoinTicket};
use meshwork_protocol::{Domain, Ed25519Signer, PublicKey, Role, SessionId, Signer as _};
use meshwork_session::{Config, Session};
use tokio::task::JoinHandle;

pub mod assets;
pub mod config;
pub mod conn;
pub mod data;
pub mod driver;
pub mod export;
pub mod http;
pub mod ice;
pub mod import;
pub mod import_cli;
pub mod metrics;
pub mod quic;
pub mod rotation;
pub mod router;
pub mod store;
pub mod telemetry;
pub mod webrtc;
pub mod ws;

use crate::config::Settings;
use crate::data::{DataDir, random_bytes};
use crate::driver::{DriverMsg, SessionHandle};
use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::writer::{Chain, StoreCmd, StoreHandle, WriterConfig};

/// Capacity of each session driver's inbox.
const DRIVER_INBOX: usize = 4096;
/// Graceful shutdown budget: after this, remaining connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("I/O: {0}")]
    Io(String),
    /// Settings or stored data are invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the HTTP handlers and connection tasks share.
#[derive(Debug)]
pub struct ServerContext {
    /// The running sessions.
    pub router: Arc<Router>,
    /// Signs invites.
    pub server_key: Ed25519Signer,
    /// SHA-256 of the TLS certificate.
    pub cert_sha256: [u8; 32],
    /// The admin token's digest.
    pub admin_token_sha256: [u8; 32],
    /// The default session.
    pub default_session: SessionId,
    /// `host:port` clients dial for QUIC.
    pub public_quic_addr: String,
    /// Settings in force.
    pub settings: Settings,
    /// The store writer.
    pub store: StoreHandle,
    /// Asset uploads in progress and the assets each session holds.
    pub assets: assets::Assets,
    /// Driver tasks, for shutdown.
    drivers: Mutex<Vec<JoinHandle<()>>>,
}

impl ServerContext {
    /// The session settings for `id`.
    #[must_use]
    pub fn session_config(&self, id: SessionId) -> Config {
        session_config(&self.server_key, &self.settings, id)
    }

    /// Registers a session's chain with the store writer and starts its driver.
    pub async fn run_session(
        &self,
        session: Session,
        name: String,
        chain: Chain,
        metrics: &Metrics,
    ) -> SessionHandle {
        let _ = self
            .store
            .tx
            .send(StoreCmd::Open {
                session: session.id(),
                chain,
            })
            .await;
        let (handle, task) = driver::spawn(
            session,
            name,
            metrics.clone(),
            DRIVER_INBOX,
            self.store.clone(),
            self.settings.snapshot_every,
        );
        self.drivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
        handle
    }
}

fn session_config(server_key: &Ed25519Signer, settings: &Settings, id: SessionId) -> Config {
    let mut config = Config::signed_by(id, Arc::new(Ed25519Signer::from_seed(server_key.seed())));
    config.build_id = build_id();
    config.rate_per_s = settings.rate_per_s;
    config.burst = settings.burst;
    config.max_clients = settings.max_clients;
    config.max_authors = settings.max_members;
    config.max_keys_per_invite = settings.max_keys_per_invite;
    config.resync_per_min = settings.resync_per_min;
    config.history_per_min = settings.history_per_min;
    config.history_page = settings.history_page;
    config.log_window = settings.log_window;
    config.presence_pack_ms = settings.presence_tick_ms;
    config
}

/// This build, as sent in handshakes.
#[must_use]
pub fn build_id() -> String {
    format!("meshwork-server {}", env!("CARGO_PKG_VERSION"))
}

/// Mints an invite for `session` and wraps it with the connection details in a ticket.
///
/// # Errors
/// [`Error::Config`] if the invite cannot be encoded.
pub fn mint_ticket(
    server_key: &Ed25519Signer,
    quic_addr: &str,
    cert_sha256: [u8; 32],
    session: SessionId,
    role: Role,
    expires_at_ms: u64,
) -> Result<JoinTicket, Error> {
    let body = InviteBody {
        domain: Domain::Invite,
        session,
        role,
        expires_at_ms,
        invite_id: random_bytes()?,
    };
    let invite = Invite::mint(&body, server_key).map_err(|e| Error::Config(e.to_string()))?;
    Ok(JoinTicket {
        quic_addr: quic_addr.to_owned(),
        cert_sha256,
        invite,
    })
}

/// The bound sockets a server runs on.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP.
    pub http: TcpListener,
    /// QUIC.
    pub quic: UdpSocket,
    /// WebRTC: every browser peer on this one socket.
    pub rtc: UdpSocket,
}

impl Listeners {
    /// Binds the addresses of `settings`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the address that could not be bound.
    pub fn bind(settings: &Settings) -> Result<Self, Error> {
        let (http, quic, rtc) = (settings.http_addr, settings.quic_addr, settings.rtc_addr);
        let http_l = TcpListener::bind(http).map_err(|e| Error::Io(format!("HTTP {http}: {e}")))?;
        let quic_s =
            UdpSocket::bind(quic).map_err(|e| Error::Io(format!("QUIC {quic}/udp: {e}")))?;
        let rtc_s =
            UdpSocket::bind(rtc).map_err(|e| Error::Io(format!("WebRTC {rtc}/udp: {e}")))?;
        Ok(Self {
            http: http_l,
            quic: quic_s,
            rtc: rtc_s,
        })
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where QUIC listens.
    pub quic_addr: SocketAddr,
    /// The WebRTC UDP address.
    pub rtc_addr: SocketAddr,
    /// Shared state (sessions, keys).
    pub ctx: Arc<ServerContext>,
    /// Metrics registry.
    pub metrics: Metrics,
    endpoint: quinn::Endpoint,
    http_shutdown: tokio::sync::oneshot::Sender<()>,
    http_task: JoinHandle<()>,
    accept_task: JoinHandle<()>,
    rtc: webrtc::RtcHandle,
    rtc_task: JoinHandle<()>,
    ticker_task: JoinHandle<()>,
    /// Scheduled archives (`--archive-dir`), when on.
    archive_task: Option<JoinHandle<()>>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl ServerHandle {
    /// A join ticket for the default session.
    ///
    /// # Errors
    /// As [`mint_ticket`].
    pub fn ticket(&self, role: Role, expires_at_ms: u64) -> Result<JoinTicket, Error> {
        mint_ticket(
            &self.ctx.server_key,
            &self.ctx.public_quic_addr,
            self.ctx.cert_sha256,
            self.ctx.default_session,
            role,
            expires_at_ms,
        )
    }

    /// The server's invite-signing public key.
    #[must_use]
    pub fn server_public_key(&self) -> PublicKey {
        self.ctx.server_key.public_key()
    }

    /// Stops accepting, closes every client with `ServerShutdown`, lets connections flush, and
    /// returns when everything has stopped (or after [`SHUTDOWN_GRACE`]).
    pub async fn shutdown_and_wait(self) {
        self.ctx.router.begin_shutdown();
        for session in self.ctx.router.all() {
            let _ = session.send(DriverMsg::Shutdown).await;
        }
        let drivers: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .ctx
                .drivers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let endpoint = self.endpoint.clone();
        let drain = async move {
            for d in drivers {
                let _ = d.await;
            }
            // Writers flush their close frames; wait for connections to finish closing.
            endpoint.wait_idle().await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("shutdown grace period over; dropping remaining connections");
        }
        // WebRTC peers were told by their drivers; close what is left and stop the socket task.
        self.rtc.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.rtc_task).await;
        self.endpoint.close(
            quic::close_code(meshwork_protocol::wire::CloseReason::ServerShutdown).into(),
            b"server shutdown",
        );
        // Drivers have sent their final snapshots; the writer adds final checkpoints and stops.
        self.ticker_task.abort();
        if let Some(task) = &self.archive_task {
            task.abort();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .ctx
            .store
            .tx
            .send(StoreCmd::Shutdown { reply: tx })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let writer = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        self.accept_task.abort();
        let _ = self.http_shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(1), self.http_task).await;
    }
}

/// Starts the server on `listeners` with the data directory already opened.
///
/// # Errors
/// [`Error`] when TLS or a listener cannot be set up.
pub async fn start(
    settings: Settings,
    listeners: Listeners,
    data: DataDir,
) -> Result<ServerHandle, Error> {
    let metrics = Metrics::new();
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|e| Error::Io(e.to_string()))?;
    let quic_addr = listeners
        .quic
        .local_addr()
        .map_err(|e| Error::Io(e.to_string()))?;
    let public_quic_addr = match &settings.public_host {
        Some(host) => format!("{host}:{}", quic_addr.port()),
        None => quic_addr.to_string(),
    };
    let default_session = data.default_session()?;
    let endpoint = quic::endpoint(
        listeners.quic,
        &data.cert_der,
        &data.cert_key_der,
        Duration::from_secs(settings.idle_timeout_s),
    )?;
    let server_key = Ed25519Signer::from_seed(data.server_key.seed());

    // Recovery: every session from its store (newest valid snapshot + replay), before any
    // connection is accepted.
    let store = store::open(settings.store, &data.root).map_err(|e| Error::Io(e.to_string()))?;
    let mut restored = Vec::new();
    let stored_assets = assets::Assets::default();
    for meta in &data.sessions {
        let id = data::parse_session_id(&meta.id)?;
        let started = std::time::Instant::now();
        let mut loaded = store::log::load_meta(store.as_ref(), id)
            .map_err(|e| Error::Io(format!("session {id}: {e}")))?;
        let config = session_config(&server_key, &settings, id);
        let mut restoring = store::log::start_replay(
            &mut loaded,
            config,
            random_bytes()?,
            driver::now_ms(),
            Some(u64::MAX),
        );
        // Entries stream from the store into the session, which holds only its window; the
        // ids of the latest are kept for the history's times.
        let mut ids: std::collections::VecDeque<meshwork_protocol::CommandId> =
            std::collections::VecDeque::new();
        store::log::scan_entries(store.as_ref(), id, &mut loaded, &mut |_, e| {
            if let Ok(body) = e.decode_body() {
                if ids.len() == meshwork_session::session::ENTRY_TIMES {
                    ids.pop_front();
                }
                ids.push_back(body.id());
            }
            restoring.push(e).map_err(|e| e.to_string())
        })
        .map_err(|e| Error::Io(format!("session {id}: {e}")))?;
        let chain = Chain {
            name: meta.name.clone(),
            position: loaded.count,
            head: loaded.head,
            since_checkpoint: 0,
        };
        let (mut session, report) = restoring
            .finish()
            .map_err(|e| Error::Io(format!("session {id}: {e}")))?;
        let ids: Vec<_> = ids.into();
        let first = loaded
            .count
            .saturating_sub(ids.len() as u64)
            .saturating_add(1);
        session.note_checkpoint_times(first, &ids, &loaded.checkpoints);
        session.load_invites(loaded.invites);
        for (asset_id, asset) in &loaded.assets {
            // The file's length is not kept; 0 says "stored before this start".
            stored_assets.note_stored(id, *asset_id, asset, 0);
        }
        if chain.position > 0 {
            tracing::info!(
                session = %id,
                entries = chain.position,
                from_snapshot = report.from_snapshot,
                replayed = report.replayed,
                snapshot_rejected = report.snapshot_rejected,
                ms = started.elapsed().as_millis(),
                "session restored"
            );
        }
        restored.push((session, meta.name.clone(), chain));
    }
    let writer_config = WriterConfig {
        checkpoint_every: settings.checkpoint_every,
        checkpoint_interval: Duration::from_secs(settings.checkpoint_interval_s),
        commit_interval: Duration::from_millis(settings.commit_interval_ms),
    };
    // Scheduled archives work on a second handle of the store, beside the writer.
    let archive_task = match &settings.archive_dir {
        Some(dir) => Some(
            rotation::spawn(
                rotation::Schedule {
                    dir: dir.clone(),
                    recipients: settings.archive_recipients.clone(),
                    every: settings.archive_every,
                    keep: settings.archive_keep,
                    check: Duration::from_secs(settings.archive_check_s),
                    window: settings.log_window,
                },
                store.share(),
                Ed25519Signer::from_seed(server_key.seed()),
                metrics.clone(),
            )
            .map_err(Error::Config)?,
        ),
        None => None,
    };
    let (store_handle, writer_thread) = store::writer::spawn(
        store,
        Ed25519Signer::from_seed(server_key.seed()),
        writer_config,
        metrics.clone(),
    )
    .map_err(|e| Error::Io(format!("store writer thread: {e}")))?;
    let router = Arc::new(Router::new(
        default_session,
        settings.max_connections_per_ip,
    ));
    let ctx = Arc::new(ServerContext {
        router: router.clone(),
        server_key,
        cert_sha256: data.cert_sha256,
        admin_token_sha256: data.admin_token_sha256,
        default_session,
        public_quic_addr,
        settings: settings.clone(),
        store: store_handle.clone(),
        assets: stored_assets,
        drivers: Mutex::new(Vec::new()),
    });
    for (session, name, chain) in restored {
        let handle = ctx.run_session(session, name, chain, &metrics).await;
        router.add(handle);
    }
    let ticker_task = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            if store_handle.tx.send(StoreCmd::Tick).await.is_err() {
                return;
            }
        }
    });
    let (rtc, rtc_task) = webrtc::spawn(
        listeners.rtc,
        webrtc::RtcSettings {
            public_ips: settings.rtc_public_ips.clone(),
            max_peers: settings.rtc_max_peers,
            outbox_frames: settings.outbox_frames,
            connect_timeout: Duration::from_secs(settings.rtc_connect_timeout_s),
        },
        router.clone(),
        metrics.clone(),
    )?;
    let rtc_addr = rtc.local_addr();
    let accept_task = tokio::spawn(quic::accept_loop(
        endpoint.clone(),
        router.clone(),
        metrics.clone(),
        conn::ConnLimits::of(&settings),
    ));

    let ready = Arc::new(AtomicBool::new(false));
    let state = http::AppState {
        ctx: ctx.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        data: Arc::new(Mutex::new(data)),
        rtc: rtc.clone(),
    };
    listeners
        .http
        .set_nonblocking(true)
        .map_err(|e| Error::Io(e.to_string()))?;
    let tcp =
        tokio::net::TcpListener::from_std(listeners.http).map_err(|e| Error::Io(e.to_string()))?;
    let (http_shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(state);
    let http_task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(tcp, app).with_graceful_shutdown(async {
            let _ = stop.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(ServerHandle {
        http_addr,
        quic_addr,
        rtc_addr,
        ctx,
        metrics,
        endpoint,
        rtc,
        rtc_task,
        http_shutdown,
        http_task,
        accept_task,
        ticker_task,
        archive_task,
        writer_thread,
    })
}
