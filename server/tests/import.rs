//! Import through the real binary: a 20 MB glTF file uploaded in chunks over HTTP, the upload
//! dropped half-way and resumed where the server says, each chunk and the whole file checked
//! against SHA-256, stored once (a second upload is answered at once), then imported with one
//! signed `Import` (one undo step) that every member's replica receives; a late joiner and a
//! restarted server (replaying the log with the stored asset) hold the same scene.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use meshwork_protocol::command::AssetId;
use meshwork_protocol::wire::RefusalCode;
use meshwork_protocol::{Command, Ed25519Signer, EntityId, SessionId};
use meshwork_server::export::{Provenance, export};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(30);
const CHUNK: usize = 1 << 20;

/// A GLB of `n` cubes, each subdivided to 972 triangles (about 59 KB each).
fn big_glb(n: u32) -> Vec<u8> {
    exported(n).to_glb().unwrap()
}

/// The same as `.gltf` JSON and the `two parts.bin` it names.
fn big_glb_parts(n: u32) -> (Vec<u8>, Vec<u8>) {
    let e = exported(n);
    let (json, bin) = e.to_gltf("two parts.bin").unwrap();
    (json, bin.to_vec())
}

fn exported(n: u32) -> meshwork_server::export::Exported {
    let s = meshwork_testkit::subdivided_cubes(n, 20);
    let provenance = Provenance::unrecorded(&s, SessionId([1; 16]));
    export(&s, None, &provenance).unwrap()
}

/// `PUT`s bytes `from..to` of `file` in 1 MiB chunks; the last answer.
async fn put_range(
    server: &ServerProcess,
    path: &str,
    ticket: &str,
    file: &[u8],
    from: usize,
    to: usize,
) -> http::Response {
    let mut at = from;
    let mut last = None;
    while at < to {
        let end = (at + CHUNK).min(to);
        last = Some(put_chunk(server, path, ticket, file, at, &file[at..end]).await);
        let r = last.as_ref().unwrap();
        assert!(
            r.status == 200 || r.status == 201,
            "chunk at {at}: {} {}",
            r.status,
            r.body
        );
        at = end;
    }
    last.unwrap()
}

async fn put_chunk(
    server: &ServerProcess,
    path: &str,
    ticket: &str,
    file: &[u8],
    offset: usize,
    chunk: &[u8],
) -> http::Response {
    let offset = offset.to_string();
    let length = file.len().to_string();
    let sha = hex::encode(Sha256::digest(chunk));
    http::request_bytes(
        server.http,
        "PUT",
        path,
        &[
            ("X-Meshwork-Ticket", ticket),
            ("Upload-Offset", &offset),
            ("Upload-Length", &length),
            ("X-Chunk-Sha256", &sha),
        ],
        chunk,
    )
    .await
    .unwrap()
}

fn json(r: &http::Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_is_stored_once_imported_as_one_step_and_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let text = ticket.to_text();
    let n = 340;
    let file = big_glb(n);
    assert!(file.len() > 20_000_000, "{} bytes", file.len());
    let asset = AssetId(Sha256::digest(&file).into());
    let path = format!("/api/v1/sessions/{session}/assets/{asset}");
    let status = |server: &ServerProcess| {
        let (addr, path, text) = (server.http, path.clone(), text.clone());
        async move {
            http::request(addr, "GET", &path, &[("X-Meshwork-Ticket", &text)], "")
                .await
                .unwrap()
        }
    };
    assert_eq!(status(&server).await.status, 404, "nothing of it yet");
    // A file the importer refuses: 422 with the reason, and nothing is kept.
    let bad = b"{\"asset\": {\"version\": \"2.0\"}, \"meshes\": [{\"primitives\": []}]}".to_vec();
    let bad_path = format!(
        "/api/v1/sessions/{session}/assets/{}",
        hex::encode(Sha256::digest(&bad))
    );
    let r = put_chunk(&server, &bad_path, &text, &bad, 0, &bad).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("not a glTF file") || r.body.contains("no triangle meshes"),
        "{}",
        r.body
    );
    let r = http::request(
        server.http,
        "GET",
        &bad_path,
        &[("X-Meshwork-Ticket", &text)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "a refused file is not kept: {}", r.body);

    // Half of it, then the connection is gone: the server says where to resume.
    let half = 10 * CHUNK + 12_345;
    let r = put_range(&server, &path, &text, &file, 0, half).await;
    assert_eq!(json(&r)["received"], half);
    let s = json(&status(&server).await);
    assert_eq!(
        (s["received"].as_u64(), s["complete"].as_bool()),
        (Some(half as u64), Some(false))
    );
    // A chunk from the wrong place, or damaged on the way, is refused and changes nothing.
    let wrong = put_chunk(&server, &path, &text, &file, 0, &file[..CHUNK]).await;
    assert_eq!(wrong.status, 409, "{}", wrong.body);
    assert!(wrong.body.contains(&format!("{half}")), "{}", wrong.body);
    let mut damaged = file[half..half + CHUNK].to_vec();
    let sha = hex::encode(Sha256::digest(&damaged));
    damaged[7] ^= 1;
    let r = http::request_bytes(
        server.http,
        "PUT",
        &path,
        &[
            ("X-Meshwork-Ticket", &text),
            ("Upload-Offset", &half.to_string()),
            ("Upload-Length", &file.len().to_string()),
            ("X-Chunk-Sha256", &sha),
        ],
        &damaged,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(json(&status(&server).await)["received"], half);
    // A viewer may look but not upload.
    let admin = http::Admin {
        addr: server.http,
        token: token.clone(),
    };
    let viewer = admin.invite(&session.to_string(), "viewer").await.unwrap();
    let r = put_chunk(&server, &path, &viewer, &file, half, &file[half..half + 10]).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // The rest: the whole file checks out, is read and stored.
    let done = put_range(&server, &path, &text, &file, half, file.len()).await;
    assert_eq!(done.status, 201, "{}", done.body);
    let done = json(&done);
    assert_eq!(done["complete"], true);
    let listed = done["entities"].as_array().unwrap();
    assert_eq!(listed.len(), n as usize);
    assert_eq!(
        listed[0]["faces"], 486,
        "the quads of a subdivided cube, not its triangles"
    );
    // Uploaded again: stored once, answered at once.
    let again = put_chunk(&server, &path, &text, &file, 0, &file[..CHUNK]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(json(&again)["complete"], true);

    // One signed command imports it; the others see it, and it is one undo step.
    let importer = [42u8; 32];
    let mut a = Client::join(&ticket, Ed25519Signer::from_seed(importer))
        .await
        .unwrap();
    let first = EntityId::new(a.author(), 1);
    let import = Command::Import {
        asset,
        first,
        count: n,
    };
    a.submit_acked(vec![import.clone()], WAIT).await.unwrap();
    let mut b = Client::join(&ticket, random_signer()).await.unwrap();
    b.catch_up(1, WAIT).await.unwrap();
    assert_eq!(b.replica().scene().entities.len(), n as usize);
    let e = &b.replica().scene().entities[&first];
    assert_eq!(e.geometry.edit_mesh(e.spawned_by).faces().len(), 486);
    a.catch_up(1, WAIT).await.unwrap();
    // (Too big for one frame as a delta: it reached `a` as a chunked snapshot.)
    assert_eq!(
        a.replica().scene().state_hash(),
        b.replica().scene().state_hash()
    );
    // An asset nobody uploaded is refused, naming it.
    let unknown = AssetId([9; 32]);
    let sent = a
        .submit(vec![Command::Import {
            asset: unknown,
            first: EntityId::new(a.author(), 5000),
            count: 1,
        }])
        .await
        .unwrap();
    let seq = sent[0].decode_body().unwrap().seq;
    let deadline = std::time::Instant::now() + WAIT;
    a.until(deadline, |s| s.refusals.iter().any(|r| r.seq == seq))
        .await
        .unwrap();
    let refusal = a.seen.refusals.iter().find(|r| r.seq == seq).unwrap();
    assert!(
        refusal.message.contains(&unknown.to_string()),
        "{refusal:?}"
    );
    assert_ne!(refusal.code, RefusalCode::Malformed);
    let hash = a.replica().scene().state_hash();
    // Every refusal was counted by its reason.
    let metrics = http::get(server.http, "/metrics").await.unwrap().body;
    for (outcome, n) in [
        ("offset", 1),
        ("chunk_hash", 1),
        ("unreadable", 1),
        ("stored", 1),
        ("already_stored", 1),
    ] {
        let line = format!("meshwork_asset_chunks_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // After a restart the log replays with the stored asset: the same scene, and the import
    // still undoes as one step.
    drop((a, b));
    server.terminate(WAIT);
    let server = ServerProcess::start(BIN, &data, &[]);
    let s = json(&status(&server).await);
    assert_eq!(s["complete"], true, "{s}");
    // New ports: a new ticket to the same session.
    let ticket = server.ticket(BIN, &data, "editor");
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    c.catch_up(1, WAIT).await.unwrap();
    assert_eq!(c.replica().scene().state_hash(), hash);
    let mut a = Client::join(&ticket, Ed25519Signer::from_seed(importer))
        .await
        .unwrap();
    a.catch_up(1, WAIT).await.unwrap();
    let position = a.replica().scene().position;
    a.submit_acked(vec![Command::Undo { step: None }], WAIT)
        .await
        .unwrap();
    c.catch_up(position + 1, WAIT).await.unwrap();
    assert!(
        c.replica().scene().entities.is_empty(),
        "one undo takes the whole import away"
    );
}

/// `meshwork-server import` against the running server: the file goes up with a progress bar
/// and lands as one import a member sees; a viewer's ticket is refused with the reason; the
/// same key file is the same author, so the import can be undone by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_command_uploads_and_imports_as_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");
    // A `.gltf` with its `.bin` beside it: the command packs them into one upload.
    let file = dir.path().join("two.gltf");
    let (gltf_json, bin) = big_glb_parts(2);
    std::fs::write(&file, gltf_json).unwrap();
    std::fs::write(dir.path().join("two parts.bin"), bin).unwrap();
    let key = dir.path().join("cli.key");
    let run = |ticket: &str, key: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "import",
            "--http-addr",
            &server.http.to_string(),
            "--ticket",
            ticket,
        ]);
        if let Some(key) = key {
            cmd.arg("--key-file").arg(key);
        }
        cmd.arg(&file).output().unwrap()
    };
    let out = run(&ticket.to_text(), Some(&key));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported") && stdout.contains("2 objects"),
        "{stdout}"
    );
    let mut member = Client::join(&ticket, random_signer()).await.unwrap();
    member.catch_up(1, WAIT).await.unwrap();
    assert_eq!(member.replica().scene().entities.len(), 2);
    // The key file made that import's author: joining with it, the import undoes.
    let seed: [u8; 32] = hex::decode(std::fs::read_to_string(&key).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    let mut author = Client::join(&ticket, Ed25519Signer::from_seed(seed))
        .await
        .unwrap();
    author.catch_up(1, WAIT).await.unwrap();
    author
        .submit_acked(vec![Command::Undo { step: None }], WAIT)
        .await
        .unwrap();
    member.catch_up(2, WAIT).await.unwrap();
    assert!(member.replica().scene().entities.is_empty());
    // A viewer's ticket (a new key: a known key keeps the role it had): refused, with why.
    let viewer = server.ticket(BIN, &data, "viewer");
    let out = run(&viewer.to_text(), None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("editor"), "{stderr}");

    // A backup holds the asset: restored elsewhere, the log (with its import) verifies and
    // replays to the same state.
    let token = server.admin_token().unwrap();
    let r = http::request(
        server.http,
        "POST",
        "/api/v1/backup",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let backup = json(&r)["path"].as_str().unwrap().to_owned();
    let mut server = server;
    server.terminate(WAIT);
    let cli = |args: &[&str], dir: &std::path::Path| {
        let o = std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, original) = cli(&["verify-log"], &data);
    assert!(ok, "{original}");
    let restored = dir.path().join("restored");
    let (ok, out) = cli(&["restore", "--from", &backup], &restored);
    assert!(ok, "{out}");
    for f in [
        "server.key",
        "cert.der",
        "cert.key.der",
        "admin-token.sha256",
        "sessions.json",
    ] {
        std::fs::copy(data.join(f), restored.join(f)).unwrap();
    }
    let (ok, again) = cli(&["verify-log"], &restored);
    assert!(ok, "{again}");
    let state = |t: &str| {
        t.rsplit("state ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(state(&again), state(&original));
}
