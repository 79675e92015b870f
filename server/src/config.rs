//! Settings: command-line flags, then `MESHWORK_*` environment variables, then an optional TOML
//! file, then built-in defaults — in that precedence. `serve` needs none of them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::Error;

/// The smallest `--log-window`: a window must hold the entries in flight and what honest
/// clients have not seen yet.
pub const MIN_LOG_WINDOW: usize = 1024;

/// `meshwork-server`: the Meshwork session server.
#[derive(Debug, Parser)]
#[command(name = "meshwork-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (zero configuration: data in ./data, HTTP on 127.0.0.1:8080, QUIC on
    /// 127.0.0.1:4433/udp, WebRTC on 127.0.0.1:4434/udp).
    Serve(ServeArgs),
    /// Create the data directory's server key and certificate if missing, and print the key's
    /// public half and the certificate fingerprint.
    Keygen(DataArgs),
    /// Mint an invite offline from the key in the data directory and print its join ticket.
    Invite(InviteArgs),
    /// Check a stopped server's log offline: every author signature, the hash chain and the
    /// signed checkpoints. Names the first bad entry and exits non-zero if anything is wrong.
    VerifyLog(VerifyArgs),
    /// Export a stopped server's session as glTF 2.0: GLB, or `.gltf` JSON with a `.bin`
    /// beside it when `--out` ends in `.gltf`. Provenance (log position, state hashes, chain
    /// head, server key, authors) is in `asset.extras.meshwork`.
    Export(ExportArgs),
    /// Write a stopped server's session — its signed, hash-chained log, authors, checkpoints,
    /// assets and invites — as an archive encrypted to age recipients, ending on a checkpoint
    /// signed by the server key. `verify-log --archive` proves it offline.
    Archive(ArchiveArgs),
    /// Write a consistent backup of a stopped server's store (a running server backs up online
    /// with `POST /api/v1/backup`).
    Backup(BackupArgs),
    /// Load a backup into an empty data dir (the server must be stopped).
    Restore(RestoreArgs),
    /// Exit 0 when the server at `--http-addr` answers `/healthz`, 1 otherwise (for container
    /// health checks: needs no shell or curl in the image).
    Healthcheck(HealthArgs),
    /// Import a glTF file (`.glb`, or `.gltf` with its buffers embedded or beside it) into a
    /// running server's session as a member: uploaded in checked, resumable chunks with a
    /// progress bar, then one signed `Import` (one undo step).
    Import(ImportArgs),
}

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The server's HTTP address.
    #[arg(long, env = "MESHWORK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// A join ticket with the editor role (`mwj1_…`, as `invite` prints or an invite link holds).
    #[arg(long, env = "MESHWORK_TICKET", hide_env_values = true)]
    pub ticket: String,
    /// The signing key to import as (64 hex characters; created when missing). Without it each
    /// run is a new author, and only that run could undo its import.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The file.
    pub file: PathBuf,
}

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server's HTTP address.
    #[arg(long, env = "MESHWORK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// Flags of `verify-log`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Only this session (hex id).
    #[arg(long)]
    pub session: Option<String>,
    /// The store backend [default: redb].
    #[arg(long, env = "MESHWORK_STORE", default_value = "redb")]
    pub store: crate::store::Backend,
    /// Verify this encrypted archive (from `archive`) instead of the data dir's store; repeat
    /// for the archives of successive rotations, oldest first: each must go on where the one
    /// before ends, and they are verified as one history.
    #[arg(long, requires = "identities")]
    pub archive: Vec<PathBuf>,
    /// With `--archive`: the data dir's store goes on where the archives end; verify the
    /// archives and the store as one history (the whole log's state hash).
    #[arg(long, requires = "archive")]
    pub with_store: bool,
    /// An age identity file that opens the archive (`AGE-SECRET-KEY-1…`); repeatable.
    #[arg(long = "identity")]
    pub identities: Vec<PathBuf>,
    /// The server public key (64 hex characters) the archive's checkpoints must be signed by.
    /// Without it, the data dir's `server.key`; with neither, the archive is not verified (the
    /// key it names would prove only that it is consistent, not whose it is).
    #[arg(long, requires = "archive")]
    pub server_key: Option<String>,
    /// Replay holding the whole log in memory (about 1 KiB per entry), so that the log's state
    /// hash, which covers every entry, is printed for a log of any length. Without it the
    /// replay holds the server's default window of entries (32,768) and the log's state hash
    /// is printed only for a log that fits it; the scene's hash is printed always.
    #[arg(long)]
    pub full_replay: bool,
}

impl VerifyArgs {
    /// Entries the replay holds at most.
    #[must_use]
    pub const fn window(&self) -> usize {
        if self.full_replay {
            usize::MAX
        } else {
            meshwork_session::session::DEFAULT_LOG_WINDOW
        }
    }
}

/// Flags of `archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The data directory (its `server.key` signs the closing checkpoint).
    #[command(flatten)]
    pub data: DataArgs,
    /// The session (hex id); may be left out when the store holds one session.
    #[arg(long)]
    pub session: Option<String>,
    /// An age public key to encrypt to (`age1…`, as `age-keygen` prints it); repeat for more
    /// recipients, any one of whom can open the archive.
    #[arg(long = "recipient", required = true)]
    pub recipients: Vec<String>,
    /// The archive file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The store backend [default: redb].
    #[arg(long, env = "MESHWORK_STORE", default_value = "redb")]
    pub store: crate::store::Backend,
    /// Then rotate the archived history out of the store, keeping its last `--keep` entries
    /// (the store keeps a signed base and checkpoint where the rest ends).
    #[arg(long)]
    pub rotate: bool,
    /// With `--rotate`: entries the store keeps [default: the log window, 32768].
    #[arg(long, requires = "rotate")]
    pub keep: Option<u64>,
}

/// Flags of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// The session (hex id); may be left out when the store holds one session.
    #[arg(long)]
    pub session: Option<String>,
    /// The file to write: `.glb`, or `.gltf` (then the buffer goes to the same name with
    /// `.bin`).
    #[arg(long)]
    pub out: PathBuf,
    /// Export the state after this many entries (an earlier point of the history) instead of
    /// the last.
    #[arg(long)]
    pub at: Option<u64>,
    /// Only these entities (hex ids as the editor shows them, repeatable); default: all.
    #[arg(long = "entity")]
    pub entities: Vec<String>,
    /// The store backend [default: redb].
    #[arg(long, env = "MESHWORK_STORE", default_value = "redb")]
    pub store: crate::store::Backend,
    /// Replay holding the whole log in memory, so that the provenance carries the log's state
    /// hash for a log of any length (as `verify-log --full-replay`); without it, only for a
    /// log that fits the default window of 32,768 entries.
    #[arg(long)]
    pub full_replay: bool,
}

/// Flags of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The data directory (offline backup of a stopped server).
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the backup file.
    #[arg(long)]
    pub out: PathBuf,
    /// The store backend [default: redb].
    #[arg(long, env = "MESHWORK_STORE", default_value = "redb")]
    pub store: crate::store::Backend,
}

/// Flags of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The data directory to restore into (its store must not exist yet).
    #[command(flatten)]
    pub data: DataArgs,
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The store backend to restore into [default: redb].
    #[arg(long, env = "MESHWORK_STORE", default_value = "redb")]
    pub store: crate::store::Backend,
}

/// Flags of `serve`; each also reads its `MESHWORK_*` variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and variables win over it).
    #[arg(long, env = "MESHWORK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where keys, the certificate and session metadata live [default: ./data].
    #[arg(long, env = "MESHWORK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API, metrics and health [default: 127.0.0.1:8080].
    #[arg(long, env = "MESHWORK_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// QUIC (UDP) for native clients [default: 127.0.0.1:4433].
    #[arg(long, env = "MESHWORK_QUIC_ADDR")]
    pub quic_addr: Option<SocketAddr>,
    /// Host name clients use to reach this server; goes in the certificate and in join tickets
    /// [default: the QUIC address's IP].
    #[arg(long, env = "MESHWORK_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// Sustained commands per second per author [default: 200].
    #[arg(long, env = "MESHWORK_RATE_PER_S")]
    pub rate_per_s: Option<u32>,
    /// Burst of commands per author [default: 400].
    #[arg(long, env = "MESHWORK_BURST")]
    pub burst: Option<u32>,
    /// Most connections per session [default: 256].
    #[arg(long, env = "MESHWORK_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// A connection that receives nothing for this long is closed: QUIC's idle timeout (the
    /// client keeps it alive), and for WebSocket the server pings every third of it
    /// [default: 30].
    #[arg(long, env = "MESHWORK_IDLE_TIMEOUT_S")]
    pub idle_timeout_s: Option<u64>,
    /// Member keys a session ever admits; a new key past it is refused, a known key still
    /// rejoins [default: 4096].
    #[arg(long, env = "MESHWORK_MAX_MEMBERS")]
    pub max_members: Option<usize>,
    /// New keys one invite admits, unless it was minted with its own `max_uses` (a known key
    /// rejoins without using one) [default: 100].
    #[arg(long, env = "MESHWORK_MAX_KEYS_PER_INVITE")]
    pub max_keys_per_invite: Option<u32>,
    /// Live connections from one IP address, over every transport and session; more are refused
    /// [default: 256].
    #[arg(long, env = "MESHWORK_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// `Resync` snapshots per connection per minute after a burst of 3; more are owed and sent
    /// as the limit allows [default: 6].
    #[arg(long, env = "MESHWORK_RESYNC_PER_MIN")]
    pub resync_per_min: Option<u32>,
    /// `FetchLog` pages (of 4096 entries) per connection per minute after a burst of 8
    /// [default: 60].
    #[arg(long, env = "MESHWORK_HISTORY_PER_MIN")]
    pub history_per_min: Option<u32>,
    /// Entries per `FetchLog` page [default: 4096].
    #[arg(long, env = "MESHWORK_HISTORY_PAGE")]
    pub history_page: Option<usize>,
    /// Log entries each session holds in memory; older ones stay only in the store
    /// [default: 32768].
    #[arg(long, env = "MESHWORK_LOG_WINDOW")]
    pub log_window: Option<usize>,
    /// Frames queued per client before it counts as too slow and is resynced [default: 1024].
    #[arg(long, env = "MESHWORK_OUTBOX_FRAMES")]
    pub outbox_frames: Option<usize>,
    /// Embedded store: redb (durable on every acknowledgement) or sled [default: redb].
    #[arg(long, env = "MESHWORK_STORE")]
    pub store: Option<crate::store::Backend>,
    /// Snapshot a session every this many entries (and at shutdown) [default: 10000].
    #[arg(long, env = "MESHWORK_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Sign a checkpoint of the log every this many entries [default: 1000].
    #[arg(long, env = "MESHWORK_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// ... or after this many seconds with unchecked entries [default: 10].
    #[arg(long, env = "MESHWORK_CHECKPOINT_INTERVAL_S")]
    pub checkpoint_interval_s: Option<u64>,
    /// Group commits start at most this many milliseconds apart: under load, what arrives
    /// meanwhile shares one flush (and its acknowledgements and fan-out their packets); a
    /// command after a quiet spell is committed at once. 0 commits whenever the store is free;
    /// at most 20 (one commit takes at most 1,024 queued batches, so the interval bounds the
    /// store's throughput) [default: 2].
    #[arg(long, env = "MESHWORK_COMMIT_INTERVAL_MS")]
    pub commit_interval_ms: Option<u64>,
    /// Presence and live previews to a member go out at most this many milliseconds apart, as
    /// one compressed datagram holding each other member's latest update (an update superseded
    /// within the tick is not sent): shorter is smoother and costs more bytes; 0 sends each
    /// update on its own, uncompressed; at most 100 [default: 22, about 45 updates a second].
    #[arg(long, env = "MESHWORK_PRESENCE_TICK_MS")]
    pub presence_tick_ms: Option<u64>,
    /// The built browser editor (`client-web/dist`), served at `/` [default: `client-web/dist`
    /// when it exists under the working directory].
    #[arg(long, env = "MESHWORK_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// WebRTC (UDP) for browsers: every peer on this one port [default: 127.0.0.1:4434].
    #[arg(long, env = "MESHWORK_RTC_ADDR")]
    pub rtc_addr: Option<SocketAddr>,
    /// Public IPs to announce in WebRTC host candidates (a server behind 1:1 NAT), comma
    /// separated [default: the bound IP, or every interface when bound to 0.0.0.0].
    #[arg(long, env = "MESHWORK_RTC_PUBLIC_IPS", value_delimiter = ',')]
    pub rtc_public_ips: Option<Vec<IpAddr>>,
    /// Most WebRTC peers at once [default: 1024].
    #[arg(long, env = "MESHWORK_RTC_MAX_PEERS")]
    pub rtc_max_peers: Option<usize>,
    /// Seconds a signaled WebRTC peer may take to open its `log` channel [default: 20].
    #[arg(long, env = "MESHWORK_RTC_CONNECT_TIMEOUT_S")]
    pub rtc_connect_timeout_s: Option<u64>,
    /// STUN URLs handed to browsers, comma separated (e.g. `stun:stun.example.org:3478`)
    /// [default: none].
    #[arg(long, env = "MESHWORK_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Option<Vec<String>>,
    /// Scheduled archive: the directory encrypted archives of old history go to. With it, a
    /// session whose store holds `--archive-keep` + `--archive-every` entries past its base has
    /// them archived and rotated out, keeping the last `--archive-keep` [default: off].
    #[arg(long, env = "MESHWORK_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Age public keys (`age1…`) the scheduled archives are encrypted to, comma separated.
    #[arg(
        long = "archive-recipient",
        env = "MESHWORK_ARCHIVE_RECIPIENTS",
        value_delimiter = ','
    )]
    pub archive_recipients: Option<Vec<String>>,
    /// Entries past the kept ones that trigger a scheduled archive [default: 100000].
    #[arg(long, env = "MESHWORK_ARCHIVE_EVERY")]
    pub archive_every: Option<u64>,
    /// Entries the store keeps after a scheduled archive [default: 32768].
    #[arg(long, env = "MESHWORK_ARCHIVE_KEEP")]
    pub archive_keep: Option<u64>,
    /// Seconds between checks for sessions due for a scheduled archive [default: 60].
    #[arg(long, env = "MESHWORK_ARCHIVE_CHECK_S")]
    pub archive_check_s: Option<u64>,
    /// TURN URLs handed to browsers, comma separated (e.g. `turn:turn.example.org:3478`)
    /// [default: none].
    #[arg(long, env = "MESHWORK_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// TURN REST shared secret (coturn `static-auth-secret`): the server mints short-lived
    /// TURN credentials from it for holders of a valid invite.
    #[arg(long, env = "MESHWORK_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Validity of minted TURN credentials, in seconds [default: 3600].
    #[arg(long, env = "MESHWORK_TURN_TTL_S")]
    pub turn_ttl_s: Option<u64>,
    /// Largest glTF file a session may import, in MiB [default: 256].
    #[arg(long, env = "MESHWORK_MAX_ASSET_MIB")]
    pub max_asset_mib: Option<usize>,
    /// Most imported files a session may hold [default: 64].
    #[arg(long, env = "MESHWORK_MAX_ASSETS")]
    pub max_assets: Option<usize>,
}

/// The data directory argument of offline commands.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The data directory [default: ./data].
    #[arg(long, env = "MESHWORK_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// Flags of `invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Session id (hex) [default: the default session].
    #[arg(long)]
    pub session: Option<String>,
    /// Role granted: viewer, editor or admin.
    #[arg(long, default_value = "editor")]
    pub role: String,
    /// Validity, e.g. `30m`, `24h`, `7d`.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// QUIC address clients dial (`host:port`) [default: 127.0.0.1:4433].
    #[arg(long, env = "MESHWORK_QUIC_ADDR", default_value = "127.0.0.1:4433")]
    pub quic_addr: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    quic_addr: Option<SocketAddr>,
    public_host: Option<String>,
    rate_per_s: Option<u32>,
    burst: Option<u32>,
    max_clients: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_members: Option<usize>,
    max_keys_per_invite: Option<u32>,
    idle_timeout_s: Option<u64>,
    resync_per_min: Option<u32>,
    history_per_min: Option<u32>,
    history_page: Option<usize>,
    log_window: Option<usize>,
    outbox_frames: Option<usize>,
    store: Option<crate::store::Backend>,
    snapshot_every: Option<u64>,
    checkpoint_every: Option<u64>,
    checkpoint_interval_s: Option<u64>,
    commit_interval_ms: Option<u64>,
    presence_tick_ms: Option<u64>,
    web_dir: Option<PathBuf>,
    rtc_addr: Option<SocketAddr>,
    rtc_public_ips: Option<Vec<IpAddr>>,
    rtc_max_peers: Option<usize>,
    rtc_connect_timeout_s: Option<u64>,
    stun_urls: Option<Vec<String>>,
    archive_dir: Option<PathBuf>,
    archive_recipients: Option<Vec<String>>,
    archive_every: Option<u64>,
    archive_keep: Option<u64>,
    archive_check_s: Option<u64>,
    turn_urls: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl_s: Option<u64>,
    max_asset_mib: Option<usize>,
    max_assets: Option<usize>,
}

/// Where a source checkout's built editor lives, relative to the working directory.
pub const DEFAULT_WEB_DIR: &str = "client-web/dist";

/// Resolved settings of a running server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// QUIC listen address.
    pub quic_addr: SocketAddr,
    /// Host name in the certificate and tickets.
    pub public_host: Option<String>,
    /// Per-author sustained rate.
    pub rate_per_s: u32,
    /// Per-author burst.
    pub burst: u32,
    /// Connections per session.
    pub max_clients: usize,
    /// Live connections per source IP address.
    pub max_connections_per_ip: usize,
    /// Member keys per session.
    pub max_members: usize,
    /// New keys per invite without its own limit.
    pub max_keys_per_invite: u32,
    /// Seconds without input before a connection is closed.
    pub idle_timeout_s: u64,
    /// `Resync` snapshots per connection per minute.
    pub resync_per_min: u32,
    /// `FetchLog` pages per connection per minute.
    pub history_per_min: u32,
    /// Entries per `FetchLog` page.
    pub history_page: usize,
    /// Log entries each session holds in memory.
    pub log_window: usize,
    /// Outgoing frames queued per client.
    pub outbox_frames: usize,
    /// Store backend.
    pub store: crate::store::Backend,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// Entries between checkpoints.
    pub checkpoint_every: u64,
    /// Seconds between time-based checkpoints.
    pub checkpoint_interval_s: u64,
    /// Shortest time between the starts of two group commits, in milliseconds.
    pub commit_interval_ms: u64,
    /// Longest wait of a presence or preview update before it is sent, in milliseconds.
    pub presence_tick_ms: u64,
    /// The browser editor bundle served at `/`, if any.
    pub web_dir: Option<PathBuf>,
    /// WebRTC UDP listen address.
    pub rtc_addr: SocketAddr,
    /// IPs announced in host candidates instead of the bound one.
    pub rtc_public_ips: Vec<IpAddr>,
    /// WebRTC peer limit.
    pub rtc_max_peers: usize,
    /// Seconds a signaled peer may take to open its `log` channel.
    pub rtc_connect_timeout_s: u64,
    /// STUN URLs for browsers.
    pub stun_urls: Vec<String>,
    /// Scheduled archives: where they go (off when `None`).
    pub archive_dir: Option<PathBuf>,
    /// Their age recipients.
    pub archive_recipients: Vec<String>,
    /// Entries past the kept ones that trigger one.
    pub archive_every: u64,
    /// Entries the store keeps after one.
    pub archive_keep: u64,
    /// Seconds between checks.
    pub archive_check_s: u64,
    /// TURN URLs for browsers.
    pub turn_urls: Vec<String>,
    /// TURN REST shared secret.
    pub turn_secret: Option<String>,
    /// Validity of minted TURN credentials.
    pub turn_ttl_s: u64,
    /// Largest importable file, bytes.
    pub max_asset_bytes: usize,
    /// Most imported files per session.
    pub max_assets: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 4433)),
            public_host: None,
            rate_per_s: 200,
            burst: 400,
            max_clients: 256,
            max_connections_per_ip: 256,
            max_members: 4096,
            max_keys_per_invite: 100,
            idle_timeout_s: 30,
            resync_per_min: 6,
            history_per_min: 60,
            history_page: 4096,
            log_window: meshwork_session::session::DEFAULT_LOG_WINDOW,
            outbox_frames: 1024,
            store: crate::store::Backend::Redb,
            snapshot_every: 10_000,
            checkpoint_every: 1_000,
            checkpoint_interval_s: 10,
            commit_interval_ms: 2,
            presence_tick_ms: meshwork_session::session::DEFAULT_PRESENCE_PACK_MS,
            web_dir: None,
            rtc_addr: SocketAddr::from(([127, 0, 0, 1], 4434)),
            rtc_public_ips: Vec::new(),
            rtc_max_peers: 1024,
            rtc_connect_timeout_s: 20,
            stun_urls: Vec::new(),
            archive_dir: None,
            archive_recipients: Vec::new(),
            archive_every: 100_000,
            archive_keep: meshwork_session::session::DEFAULT_LOG_WINDOW as u64,
            archive_check_s: 60,
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_s: 3600,
            max_asset_bytes: 256 << 20,
            max_assets: 64,
        }
    }
}

impl Settings {
    /// Flags/variables over the file over the defaults.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or parsed.
    pub fn resolve(args: &ServeArgs) -> Result<Self, Error> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Self::default();
        Ok(Self {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            http_addr: args.http_addr.or(file.http_addr).unwrap_or(d.http_addr),
            quic_addr: args.quic_addr.or(file.quic_addr).unwrap_or(d.quic_addr),
            public_host: args.public_host.clone().or(file.public_host),
            rate_per_s: args.rate_per_s.or(file.rate_per_s).unwrap_or(d.rate_per_s),
            burst: args.burst.or(file.burst).unwrap_or(d.burst),
            max_clients: args
                .max_clients
                .or(file.max_clients)
                .unwrap_or(d.max_clients),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip)
                .max(1),
            max_keys_per_invite: args
                .max_keys_per_invite
                .or(file.max_keys_per_invite)
                .unwrap_or(d.max_keys_per_invite),
            max_members: args
                .max_members
                .or(file.max_members)
                .unwrap_or(d.max_members)
                .max(1),
            idle_timeout_s: args
                .idle_timeout_s
                .or(file.idle_timeout_s)
                .unwrap_or(d.idle_timeout_s)
                .clamp(1, 3600),
            resync_per_min: args
                .resync_per_min
                .or(file.resync_per_min)
                .unwrap_or(d.resync_per_min)
                .max(1),
            history_per_min: args
                .history_per_min
                .or(file.history_per_min)
                .unwrap_or(d.history_per_min)
                .max(1),
            history_page: args
                .history_page
                .or(file.history_page)
                .unwrap_or(d.history_page)
                .clamp(1, 65_536),
            log_window: args
                .log_window
                .or(file.log_window)
                .unwrap_or(d.log_window)
                .max(MIN_LOG_WINDOW),
            outbox_frames: args
                .outbox_frames
                .or(file.outbox_frames)
                .unwrap_or(d.outbox_frames)
                .max(8),
            store: args.store.or(file.store).unwrap_or(d.store),
            snapshot_every: args
                .snapshot_every
                .or(file.snapshot_every)
                .unwrap_or(d.snapshot_every)
                .max(1),
            checkpoint_every: args
                .checkpoint_every
                .or(file.checkpoint_every)
                .unwrap_or(d.checkpoint_every)
                .max(1),
            checkpoint_interval_s: args
                .checkpoint_interval_s
                .or(file.checkpoint_interval_s)
                .unwrap_or(d.checkpoint_interval_s)
                .max(1),
            commit_interval_ms: args
                .commit_interval_ms
                .or(file.commit_interval_ms)
                .unwrap_or(d.commit_interval_ms)
                .min(MAX_COMMIT_INTERVAL_MS),
            presence_tick_ms: args
                .presence_tick_ms
                .or(file.presence_tick_ms)
                .unwrap_or(d.presence_tick_ms)
                .min(MAX_PRESENCE_TICK_MS),
            web_dir: args.web_dir.clone().or(file.web_dir).or_else(|| {
                let here = PathBuf::from(DEFAULT_WEB_DIR);
                here.join("index.html").is_file().then_some(here)
            }),
            rtc_addr: args.rtc_addr.or(file.rtc_addr).unwrap_or(d.rtc_addr),
            rtc_public_ips: args
                .rtc_public_ips
                .clone()
                .or(file.rtc_public_ips)
                .unwrap_or(d.rtc_public_ips),
            rtc_max_peers: args
                .rtc_max_peers
                .or(file.rtc_max_peers)
                .unwrap_or(d.rtc_max_peers)
                .max(1),
            rtc_connect_timeout_s: args
                .rtc_connect_timeout_s
                .or(file.rtc_connect_timeout_s)
                .unwrap_or(d.rtc_connect_timeout_s)
                .clamp(1, 300),
            archive_dir: args.archive_dir.clone().or(file.archive_dir),
            archive_recipients: args
                .archive_recipients
                .clone()
                .or(file.archive_recipients)
                .unwrap_or(d.archive_recipients),
            archive_every: args
                .archive_every
                .or(file.archive_every)
                .unwrap_or(d.archive_every)
                .max(1),
            archive_keep: args
                .archive_keep
                .or(file.archive_keep)
                .unwrap_or(d.archive_keep),
            archive_check_s: args
                .archive_check_s
                .or(file.archive_check_s)
                .unwrap_or(d.archive_check_s)
                .clamp(1, 86_400),
            stun_urls: args
                .stun_urls
                .clone()
                .or(file.stun_urls)
                .unwrap_or(d.stun_urls),
            turn_urls: args
                .turn_urls
                .clone()
                .or(file.turn_urls)
                .unwrap_or(d.turn_urls),
            turn_secret: args.turn_secret.clone().or(file.turn_secret),
            turn_ttl_s: args
                .turn_ttl_s
                .or(file.turn_ttl_s)
                .unwrap_or(d.turn_ttl_s)
                .clamp(60, 86_400),
            max_asset_bytes: args
                .max_asset_mib
                .or(file.max_asset_mib)
                .map_or(d.max_asset_bytes, |m| {
                    m.clamp(1, 4096).saturating_mul(1 << 20)
                }),
            max_assets: args
                .max_assets
                .or(file.max_assets)
                .unwrap_or(d.max_assets)
                .max(1),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Parses `30s`, `15m`, `24h`, `7d` into milliseconds.
///
/// # Errors
/// [`Error::Config`] for anything else.
pub fn parse_ttl_ms(text: &str) -> Result<u64, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::Config(format!("bad duration {text:?}")))?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(Error::Config(format!(
                "bad duration {text:?}: use s, m, h or d"
            )));
        }
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| Error::Config(format!("duration {text:?} is too long")))
}

/// The longest `presence_tick_ms` accepted: a tenth of a second (the protocol's
/// `presence::MAX_TICK_MS`, which clients' easing counts on).
pub const MAX_PRESENCE_TICK_MS: u64 = meshwork_protocol::presence::MAX_TICK_MS;

/// The longest `commit_interval_ms` accepted: one group commit takes at most 1,024 queued
/// batches, so a longer interval would cap the store below what it sustains (≈ 32,000 entries/s).
pub const MAX_COMMIT_INTERVAL_MS: u64 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_interval_defaults_to_2_ms_and_is_held_to_20() {
        let d = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(d.commit_interval_ms, 2);
        let off = ServeArgs {
            commit_interval_ms: Some(0),
            ..ServeArgs::default()
        };
        assert_eq!(Settings::resolve(&off).unwrap().commit_interval_ms, 0);
        let long = ServeArgs {
            commit_interval_ms: Some(5_000),
            ..ServeArgs::default()
        };
        assert_eq!(
            Settings::resolve(&long).unwrap().commit_interval_ms,
            MAX_COMMIT_INTERVAL_MS
        );
    }

    #[test]
    fn precedence_is_flag_then_file_then_default() {
        let dir = std::env::temp_dir().join(format!("mw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "rate_per_s = 7\nburst = 9\nhttp_addr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            burst: Some(11),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.burst, 11, "flag wins over file");
        assert_eq!(s.rate_per_s, 7, "file wins over default");
        assert_eq!(s.http_addr, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(s.max_clients, 256, "default");
        std::fs::write(dir.join("bad.toml"), "nonsense = 1\n").unwrap();
        let bad = ServeArgs {
            config: Some(dir.join("bad.toml")),
            ..ServeArgs::default()
        };
        assert!(matches!(Settings::resolve(&bad), Err(Error::Config(_))));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_ttl_ms("30m").unwrap(), 1_800_000);
        assert_eq!(parse_ttl_ms("7d").unwrap(), 604_800_000);
        assert!(parse_ttl_ms("5 weeks").is_err());
        assert!(parse_ttl_ms("h").is_err());
    }
}
