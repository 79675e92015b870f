//! `meshwork-server import`: a glTF file into a running server's session from a terminal, the
//! way the editor does it — uploaded over HTTP in SHA-256-checked 1 MiB chunks with a progress
//! bar (resumed where the server says after a dropped connection), then one signed `Import`
//! over the WebSocket transport, as a member with the ticket's role.
//!
//! The signing key is new for each run unless `--key-file` names one (created when missing):
//! undo is per author, so only the same key can undo the import later.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::codec::{FrameReader, to_frame};
use meshwork_protocol::command::AssetId;
use meshwork_protocol::wire::{JoinTicket, ServerMsg};
use meshwork_protocol::{Command, Ed25519Signer};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

/// Bytes per chunk.
const CHUNK: usize = 1 << 20;
/// Network failures in a row before giving up.
const RETRIES: u32 = 5;
/// How long the join and the acknowledgement may take.
const WAIT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request on a fresh connection: the status and the body.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, Vec<u8>), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// A refusal's `error` text, or the status.
fn reason(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string())
}

/// Why an import did not happen.
#[derive(Debug)]
enum Failure {
    /// The server refused (a reason to show; retrying does not help).
    Refused(String),
    /// The network failed (retried).
    Network(String),
}

/// Uploads `file`; the server's answer once it is stored (its entity list).
async fn upload(
    addr: SocketAddr,
    path: &str,
    ticket: &str,
    file: &[u8],
) -> Result<serde_json::Value, String> {
    let bar = indicatif::ProgressBar::new(file.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let auth = ("X-Meshwork-Ticket", ticket.to_owned());
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let (status, body) = request(
                addr,
                Method::GET,
                path,
                std::slice::from_ref(&auth),
                Vec::new(),
            )
            .await
            .map_err(Failure::Network)?;
            let mut received = 0usize;
            if status.is_success() {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| Failure::Network(e.to_string()))?;
                if v["complete"] == true {
                    return Ok(Some(v));
                }
                received = v["received"]
                    .as_u64()
                    .and_then(|r| usize::try_from(r).ok())
                    .unwrap_or(0);
            } else if status != StatusCode::NOT_FOUND {
                return Err(Failure::Refused(reason(status, &body)));
            }
            while received < file.len() {
                bar.set_position(received as u64);
                let end = received.saturating_add(CHUNK).min(file.len());
                let chunk = file.get(received..end).unwrap_or_default();
                let headers = [
                    auth.clone(),
                    ("Upload-Offset", received.to_string()),
                    ("Upload-Length", file.len().to_string()),
                    ("X-Chunk-Sha256", hex::encode(Sha256::digest(chunk))),
                    ("Content-Type", "application/octet-stream".to_owned()),
                ];
                let (status, body) = request(addr, Method::PUT, path, &headers, chunk.to_vec())
                    .await
                    .map_err(Failure::Network)?;
                if status == StatusCode::CONFLICT {
                    // Not where the server is: ask again where to resume.
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(Failure::Refused(reason(status, &body)));
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| Failure::Network(e.to_string()))?;
                if v["complete"] == true {
                    return Ok(Some(v));
                }
                received = end;
            }
            Ok(None)
        };
        match attempt.await {
            Ok(Some(done)) => {
                bar.finish();
                return Ok(done);
            }
            Ok(None) => {}
            Err(Failure::Refused(why)) => {
                bar.abandon();
                return Err(why);
            }
            Err(Failure::Network(why)) => {
                failures = failures.saturating_add(1);
                if failures > RETRIES {
                    bar.abandon();
                    return Err(format!("the connection failed {RETRIES} times: {why}"));
                }
                bar.println(format!("connection lost ({why}); resuming"));
                tokio::time::sleep(Duration::from_millis(250u64 << failures.min(6))).await;
            }
        }
    }
}

/// The key in `path` (64 hex characters), or a new one written there.
fn load_key(path: &Path) -> Result<Ed25519Signer, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{}: not a key (64 hex characters)", path.display()))?;
        return Ok(Ed25519Signer::from_seed(seed));
    }
    let seed = crate::data::random_bytes().map_err(|e| e.to_string())?;
    // A signing key: readable by its owner only.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, hex::encode(seed).as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Ed25519Signer::from_seed(seed))
}

/// Joins over the WebSocket and submits one `Import` of `asset` with `count` entities; waits
/// for its acknowledgement. Returns the first entity's id.
async fn submit_import(
    addr: SocketAddr,
    ticket: &JoinTicket,
    signer: Ed25519Signer,
    asset: AssetId,
    count: u32,
) -> Result<meshwork_protocol::EntityId, String> {
    let session = ticket
        .invite
        .claimed_session()
        .ok_or("the ticket names no session")?;
    let url = format!("ws://{addr}/api/v1/sessions/{session}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut conn = ClientConnection::new(
        signer,
        ticket.invite.clone(),
        concat!("meshwork-server-import ", env!("CARGO_PKG_VERSION")),
    );
    let mut reader = FrameReader::new();
    let mut sent: Option<(u64, meshwork_protocol::EntityId)> = None;
    let end = Instant::now()
        .checked_add(WAIT)
        .unwrap_or_else(Instant::now);
    loop {
        while let Some(msg) = conn.poll_transmit() {
            let frame = to_frame(&msg).map_err(|e| e.to_string())?;
            ws.send(Message::Binary(frame.into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        let left = end.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| "the server did not answer in time".to_owned())?;
        let bytes = match next {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(c))) => {
                return Err(format!(
                    "the server closed the connection: {}",
                    c.map(|c| c.reason.to_string()).unwrap_or_default()
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the connection closed".into()),
        };
        reader.push(&bytes).map_err(|e| e.to_string())?;
        while let Some(msg) = reader.next_msg::<ServerMsg>().map_err(|e| e.to_string())? {
            match (&msg, sent) {
                (ServerMsg::Ack(a), Some((seq, first))) if a.seq == seq => return Ok(first),
                (ServerMsg::CommandRefused(r), Some((seq, _))) if r.seq == seq => {
                    return Err(format!("the import was refused: {}", r.message));
                }
                _ => {}
            }
            match conn.handle(&msg) {
                ClientEvent::Refused(r) => return Err(format!("join refused: {}", r.message)),
                ClientEvent::Closed => return Err("the server closed the connection".into()),
                ClientEvent::Synced if sent.is_none() => {
                    let first = conn.next_entity_id(0).ok_or("not joined")?;
                    let entries = conn
                        .submit(vec![Command::Import {
                            asset,
                            first,
                            count,
                        }])
                        .ok_or("not joined")?;
                    let seq = entries
                        .first()
                        .and_then(|e| e.decode_body().ok())
                        .map(|b| b.seq)
                        .ok_or("no entry signed")?;
                    sent = Some((seq, first));
                }
                _ => {}
            }
        }
    }
}

/// Runs `meshwork-server import`: returns the line to print.
///
/// # Errors
/// Why the file was not imported.
pub fn run(
    http_addr: SocketAddr,
    ticket: &str,
    file: &Path,
    key_file: Option<&Path>,
) -> Result<String, String> {
    let ticket_text = ticket.trim().to_owned();
    let ticket = JoinTicket::from_text(&ticket_text).map_err(|e| format!("the ticket: {e}"))?;
    let session = ticket
        .invite
        .claimed_session()
        .ok_or("the ticket names no session")?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if bytes.is_empty() {
        return Err(format!("{}: the file is empty", file.display()));
    }
    // A `.gltf` travels as one GLB with the buffers beside it (read from its directory).
    let dir = file.parent().unwrap_or_else(|| Path::new("."));
    let bytes = crate::import::pack_glb(
        &bytes,
        &|name| std::fs::read(dir.join(name)).ok(),
        &crate::import::ImportLimits::DEFAULT,
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let asset = AssetId(Sha256::digest(&bytes).into());
    let signer = match key_file {
        Some(path) => load_key(path)?,
        None => Ed25519Signer::from_seed(crate::data::random_bytes().map_err(|e| e.to_string())?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let path = format!("/api/v1/sessions/{session}/assets/{asset}");
        let stored = upload(http_addr, &path, &ticket_text, &bytes).await?;
        let entities = stored["entities"].as_array().map_or(0, Vec::len);
        let count = u32::try_from(entities).map_err(|e| e.to_string())?;
        if count == 0 {
            return Err("the server read no objects from the file".into());
        }
        let first = submit_import(http_addr, &ticket, signer, asset, count).await?;
        Ok(format!(
            "imported {}: {count} object{} from {first} (asset {asset})",
            file.display(),
            if count == 1 { "" } else { "s" }
        ))
    })
}
