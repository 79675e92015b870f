//! The `meshwork-server` command: `serve`, `keygen`, `invite`, `verify-log`, `export`,
//! `archive`, `backup`, `restore`, `healthcheck`, `import`.

use std::process::ExitCode;

use clap::Parser as _;
use meshwork_protocol::{Role, Signer as _};
use meshwork_server::config::{
    ArchiveArgs, BackupArgs, Cli, Command, ExportArgs, HealthArgs, InviteArgs, RestoreArgs,
    Settings, VerifyArgs, parse_ttl_ms,
};
use meshwork_server::data::{DataDir, parse_session_id};
use meshwork_server::store;
use meshwork_server::{Error, Listeners, driver, mint_ticket};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => Settings::resolve(&args).and_then(serve),
        Command::Keygen(args) => keygen(&args.data_dir),
        Command::Invite(args) => invite(&args),
        Command::VerifyLog(args) => verify_log(&args),
        Command::Export(args) => export(&args),
        Command::Archive(args) => archive(&args),
        Command::Backup(args) => backup(&args),
        Command::Restore(args) => restore(&args),
        Command::Healthcheck(args) => healthcheck(&args),
        Command::Import(args) => meshwork_server::import_cli::run(
            args.http_addr,
            &args.ticket,
            &args.file,
            args.key_file.as_deref(),
        )
        .map(|line| println!("{line}"))
        .map_err(Error::Io),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshwork-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fingerprint(bytes: &[u8; 32]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn serve(settings: Settings) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meshwork")
        .build()
        .map_err(|e| Error::Io(e.to_string()))?;
    runtime.block_on(async move {
        let telemetry = meshwork_server::telemetry::Telemetry::init().map_err(Error::Config)?;
        let hosts: Vec<String> = settings.public_host.iter().cloned().collect();
        let data = DataDir::open_or_init(&settings.data_dir, &hosts)?;
        let new_token = data.new_admin_token.clone();
        let default_session = data.default_session()?;
        let cert = data.cert_sha256;
        let listeners = Listeners::bind(&settings)?;
        let server = meshwork_server::start(settings.clone(), listeners, data).await?;
        let http = server.http_addr;
        println!("Meshwork server {} (protocol {})", env!("CARGO_PKG_VERSION"), meshwork_protocol::PROTOCOL_VERSION);
        println!("  data dir:         {}", settings.data_dir.display());
        println!("  HTTP API:         http://{http}  (metrics: /metrics, health: /healthz)");
        println!("  QUIC:             {}/udp", server.quic_addr);
        println!("  WebRTC:           {}/udp  (signaling: POST /api/v1/sessions/<id>/rtc)", server.rtc_addr);
        match settings.web_dir.as_ref().filter(|d| d.join("index.html").is_file()) {
            Some(dir) => println!("  browser editor:   http://{http}/  (from {}; invite links open it)", dir.display()),
            None => println!("  browser editor:   not built: `cargo xtask run` builds and serves it"),
        }
        println!("  certificate:      SHA-256 {}", fingerprint(&cert));
        println!("  server key:       {}", hex::encode(server.server_public_key().0));
        println!("  default session:  {default_session}");
        match &new_token {
            Some(token) => {
                println!("  admin token:      {token}");
                println!("                    (shown once: it creates sessions and invites; keep it safe)");
            }
            None => println!("  admin token:      created on first start (stored only as a hash)"),
        }
        println!();
        println!("Next: invite someone to the default session, then join with the ticket:");
        // The binary's own path: under `cargo xtask run` it is not on PATH.
        let exe = std::env::current_exe().map_or_else(|_| "meshwork-server".to_owned(), |p| p.display().to_string());
        println!(
            "  {exe} invite --data-dir {} --role editor --quic-addr {}",
            settings.data_dir.display(),
            server.ctx.public_quic_addr
        );
        println!("  then open http://{http}/#/join/<ticket> in a browser, or paste the ticket on http://{http}/");
        println!("  or: curl -X POST -H 'Authorization: Bearer <admin token>' -d '{{\"role\":\"editor\"}}' \\");
        println!("        -H 'Content-Type: application/json' http://{http}/api/v1/sessions/{default_session}/invites");
        println!("listening: http={http} quic={} rtc={}", server.quic_addr, server.rtc_addr);
        wait_for_signal().await;
        println!("shutting down: closing clients");
        server.shutdown_and_wait().await;
        telemetry.shutdown();
        println!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn keygen(data_dir: &std::path::Path) -> Result<(), Error> {
    let data = DataDir::open_or_init(data_dir, &[])?;
    println!("data dir:        {}", data_dir.display());
    println!(
        "server key:      {}",
        hex::encode(data.server_key.public_key().0)
    );
    println!(
        "certificate:     SHA-256 {}",
        fingerprint(&data.cert_sha256)
    );
    println!("default session: {}", data.default_session()?);
    if let Some(token) = data.new_admin_token {
        println!("admin token:     {token}   (shown once)");
    }
    Ok(())
}

fn invite(args: &InviteArgs) -> Result<(), Error> {
    let data = DataDir::open_or_init(&args.data.data_dir, &[])?;
    let session = match &args.session {
        Some(id) => parse_session_id(id)?,
        None => data.default_session()?,
    };
    let role: Role = args
        .role
        .parse()
        .map_err(|e| Error::Config(format!("{e}")))?;
    let ttl_ms = parse_ttl_ms(&args.ttl)?;
    let expires_at_ms = driver::now_ms().saturating_add(ttl_ms);
    let ticket = mint_ticket(
        &data.server_key,
        &args.quic_addr,
        data.cert_sha256,
        session,
        role,
        expires_at_ms,
    )?;
    println!("{}", ticket.to_text());
    eprintln!(
        "invite: {role} in session {session}, valid for {}, server {}",
        args.ttl, args.quic_addr
    );
    Ok(())
}

fn open_existing(
    data_dir: &std::path::Path,
    backend: store::Backend,
) -> Result<Box<dyn store::Store>, Error> {
    let file = match backend {
        store::Backend::Redb => data_dir.join("store.redb"),
        store::Backend::Sled => data_dir.join("store.sled"),
    };
    if !file.exists() {
        return Err(Error::Config(format!(
            "no {backend:?} store at {} (wrong --data-dir or --store?)",
            file.display()
        )));
    }
    store::open(backend, data_dir)
        .map_err(|e| Error::Io(format!("{e} (is the server still running?)")))
}

fn verify_log(args: &VerifyArgs) -> Result<(), Error> {
    if !args.archive.is_empty() {
        return verify_archive(args);
    }
    let data = DataDir::open_or_init(&args.data.data_dir, &[])?;
    let store = open_existing(&args.data.data_dir, args.store)?;
    let sessions: Vec<meshwork_protocol::SessionId> = match &args.session {
        Some(id) => vec![parse_session_id(id)?],
        None => store::log::list_sessions(store.as_ref())
            .map_err(|e| Error::Io(e.to_string()))?
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
    };
    let server_key = data.server_key.public_key();
    let mut failed = false;
    for session in sessions {
        match store::log::verify_session_to(
            store.as_ref(),
            session,
            &server_key,
            u64::MAX,
            args.window(),
        ) {
            Ok(r) => println!("ok    session {session}: {}", verified_line(&r)),
            Err(f) => {
                failed = true;
                println!(
                    "BAD   session {session}: first bad entry {}: {}",
                    f.position, f.reason
                );
            }
        }
    }
    if failed {
        Err(Error::Config("the log does not verify".into()))
    } else {
        Ok(())
    }
}

/// What `verify-log` says of a session that verifies: entries (after the signed base, if the
/// older history was rotated out), checkpoints, the scene's hash, and the log's state hash when
/// the replay held every entry.
fn verified_line(r: &store::log::SessionVerified) -> String {
    let entries = if r.from > 0 {
        format!(
            "{} entries after the signed base at entry {}",
            r.entries, r.from
        )
    } else {
        format!("{} entries", r.entries)
    };
    let scene = hex::encode(r.scene_hash);
    match r.state_hash {
        Some(state) => format!(
            "{entries}, {} checkpoints, scene {scene}, state {}",
            r.checkpoints,
            hex::encode(state)
        ),
        None if r.from > 0 => format!("{entries}, {} checkpoints, scene {scene}", r.checkpoints),
        None => format!(
            "{entries}, {} checkpoints (more than the replay holds: --full-replay prints the \
             log's state hash), scene {scene}",
            r.checkpoints
        ),
    }
}

/// `verify-log --archive`: decrypts the archive into a temporary store, checks its seal under a
/// server key the auditor trusts, and runs the same checks as on a live store.
fn verify_archive(args: &VerifyArgs) -> Result<(), Error> {
    // The key to trust, before anything is read: one the auditor names, or the data dir's.
    let (server_key, whose) = if let Some(hex_key) = &args.server_key {
        let bytes: [u8; 32] = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Config("--server-key: 64 hex characters".into()))?;
        (meshwork_protocol::PublicKey(bytes), "--server-key")
    } else if args.data.data_dir.join("server.key").is_file() {
        let data = DataDir::open_or_init(&args.data.data_dir, &[])?;
        (data.server_key.public_key(), "the data dir's server.key")
    } else {
        return Err(Error::Config(format!(
            "no server key to check the archive against: pass --server-key (the server's public \
             key, as `keygen` prints it), or --data-dir of the server that wrote it ({} has no \
             server.key)",
            args.data.data_dir.display()
        )));
    };
    let mut identities = Vec::new();
    for path in &args.identities {
        identities.extend(store::archive::read_identities(path).map_err(Error::Config)?);
    }
    // Each archive on its own (sealed, verified), kept in its scratch store.
    let mut opened = Vec::new();
    let mut session = None;
    for archive in &args.archive {
        let (scratch, tmp, loaded, r) =
            verify_one_archive(args, archive, &identities, &server_key, whose)?;
        if session.is_some_and(|s| s != loaded.session) {
            return Err(Error::Config(format!(
                "{} holds session {}, not the one the archives before hold",
                archive.display(),
                loaded.session
            )));
        }
        session = Some(loaded.session);
        println!(
            "ok    session {}: {} (archive {}, {} records, sealed; server key {}, from {whose})",
            loaded.session,
            verified_line(&r),
            archive.display(),
            loaded.records,
            hex::encode(server_key.0)
        );
        opened.push((scratch, tmp));
    }
    let Some(session) = session else {
        return Ok(());
    };
    if opened.len() == 1 && !args.with_store {
        return Ok(());
    }
    // Then as one history: the later archives, and the store, go on where the first ends.
    let mut parts = opened.into_iter();
    let Some((mut first, _first_dir)) = parts.next() else {
        return Ok(());
    };
    let bad = |what: String| {
        println!("BAD   session {session}: {what}");
        Err(Error::Config(
            "the archives and the store do not verify as one history".into(),
        ))
    };
    for (i, (next, _dir)) in parts.enumerate() {
        if let Err(e) = store::archive::extend(first.as_mut(), next.as_ref(), session) {
            return bad(format!("archive {}: {e}", i.saturating_add(2)));
        }
    }
    if args.with_store {
        let live = open_existing(&args.data.data_dir, args.store)?;
        if let Err(e) = store::archive::extend(first.as_mut(), live.as_ref(), session) {
            return bad(format!(
                "the store in {}: {e}",
                args.data.data_dir.display()
            ));
        }
    }
    match store::log::verify_session_to(
        first.as_ref(),
        session,
        &server_key,
        u64::MAX,
        args.window(),
    ) {
        Ok(r) => {
            println!(
                "ok    session {session}: {} (as one history: {} archive(s){})",
                verified_line(&r),
                args.archive.len(),
                if args.with_store {
                    " and the store"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(f) => bad(format!("first bad entry {}: {}", f.position, f.reason)),
    }
}

/// One archive decrypted into a scratch store, its seal checked under `server_key`, its log
/// verified: the store, its directory, what the archive said, the verification.
fn verify_one_archive(
    args: &VerifyArgs,
    archive: &std::path::Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    server_key: &meshwork_protocol::PublicKey,
    whose: &str,
) -> Result<
    (
        Box<dyn store::Store>,
        tempfile::TempDir,
        store::archive::Loaded,
        store::log::SessionVerified,
    ),
    Error,
> {
    let tmp = tempfile::tempdir().map_err(|e| Error::Io(format!("a temporary directory: {e}")))?;
    let mut scratch =
        store::open(store::Backend::Redb, tmp.path()).map_err(|e| Error::Io(e.to_string()))?;
    let bar = progress(None, "decrypting");
    let loaded = store::archive::load(archive, identities, scratch.as_mut(), Some(&bar))
        .map_err(Error::Config)?;
    bar.finish_and_clear();
    let session = loaded.session;
    if let Some(id) = &args.session
        && parse_session_id(id)? != session
    {
        return Err(Error::Config(format!(
            "the archive holds session {session}, not {id}"
        )));
    }
    let bad = |what: String| {
        println!("BAD   session {session}: {what}");
        Err(Error::Config("the archive does not verify".into()))
    };
    if *server_key != loaded.server_key {
        return bad(format!(
            "archive {} names server key {}, not {} ({whose})",
            archive.display(),
            hex::encode(loaded.server_key.0),
            hex::encode(server_key.0)
        ));
    }
    // A chain that does not hold gives (0, zeros): the full check below names the entry.
    let (entries, head) = store::archive::head(scratch.as_ref(), session).unwrap_or_default();
    let r = match store::log::verify_session_to(
        scratch.as_ref(),
        session,
        server_key,
        u64::MAX,
        args.window(),
    ) {
        Ok(r) => r,
        Err(f) => return bad(format!("first bad entry {}: {}", f.position, f.reason)),
    };
    if let Err(e) = loaded.check_seal(server_key, entries, &head) {
        return bad(format!("the seal: {e}"));
    }
    Ok((scratch, tmp, loaded, r))
}

/// `--session`, or the store's only session.
fn pick_session(
    store: &dyn store::Store,
    arg: Option<&String>,
) -> Result<meshwork_protocol::SessionId, Error> {
    match arg {
        Some(id) => parse_session_id(id),
        None => {
            let all = store::log::list_sessions(store).map_err(|e| Error::Io(e.to_string()))?;
            match all.as_slice() {
                [(id, _)] => Ok(*id),
                [] => Err(Error::Config("the store holds no session".into())),
                _ => Err(Error::Config(format!(
                    "the store holds {} sessions: pick one with --session",
                    all.len()
                ))),
            }
        }
    }
}

fn archive(args: &ArchiveArgs) -> Result<(), Error> {
    let recipients = store::archive::parse_recipients(&args.recipients).map_err(Error::Config)?;
    let mut store = open_existing(&args.data.data_dir, args.store)?;
    if !args.data.data_dir.join("server.key").is_file() {
        return Err(Error::Config(format!(
            "no server.key in {}: the closing checkpoint needs the key that signed the log",
            args.data.data_dir.display()
        )));
    }
    let data = DataDir::open_or_init(&args.data.data_dir, &[])?;
    let session = pick_session(store.as_ref(), args.session.as_ref())?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let bar = progress(Some(0), "archiving");
    let written = store::archive::write(
        store.as_mut(),
        session,
        &data.server_key,
        now_ms,
        &recipients,
        &args.out,
        Some(&bar),
    )
    .map_err(Error::Io)?;
    bar.finish_and_clear();
    let rotated = if args.rotate {
        let keep = args
            .keep
            .unwrap_or(meshwork_session::session::DEFAULT_LOG_WINDOW as u64);
        store::archive::rotate(
            store.as_mut(),
            session,
            &data.server_key,
            now_ms,
            keep,
            written.entries,
            meshwork_session::session::DEFAULT_LOG_WINDOW,
        )
        .map_err(Error::Io)?
    } else {
        None
    };
    println!(
        "archived session {session}: entries {} to {} ({} records) to {}, encrypted to {} recipient(s){}",
        written.first,
        written.entries,
        written.records,
        args.out.display(),
        recipients.len(),
        if written.sealed_now {
            "; a checkpoint at the last entry was signed and stored"
        } else {
            ""
        }
    );
    match rotated {
        Some(r) => println!(
            "rotated: {} entries left the store; it starts from a signed base at entry {}",
            r.removed, r.base
        ),
        None if args.rotate => {
            println!("rotated: nothing (the store holds no more than --keep entries)")
        }
        None => {}
    }
    Ok(())
}

fn export(args: &ExportArgs) -> Result<(), Error> {
    // The store first, and the key only if it is there: the provenance names the key that
    // signed this store's checkpoints, never a fresh one.
    let store = open_existing(&args.data.data_dir, args.store)?;
    if !args.data.data_dir.join("server.key").is_file() {
        return Err(Error::Config(format!(
            "no server.key in {}: the provenance needs the key that signed the log",
            args.data.data_dir.display()
        )));
    }
    let data = DataDir::open_or_init(&args.data.data_dir, &[])?;
    let session = pick_session(store.as_ref(), args.session.as_ref())?;
    let entities = args
        .entities
        .iter()
        .map(|e| meshwork_server::export::parse_entity_id(e).map_err(Error::Config))
        .collect::<Result<Vec<_>, _>>()?;
    let (scene, provenance) = meshwork_server::export::scene_at(
        store.as_ref(),
        session,
        data.server_key.public_key(),
        args.at,
        if args.full_replay {
            usize::MAX
        } else {
            meshwork_session::session::DEFAULT_LOG_WINDOW
        },
    )
    .map_err(Error::Config)?;
    let only = (!entities.is_empty()).then_some(entities.as_slice());
    let exported = meshwork_server::export::export(&scene, only, &provenance)
        .map_err(|e| Error::Config(e.to_string()))?;
    let gltf = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gltf"));
    let write = |path: &std::path::Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    };
    if gltf {
        let bin_path = args.out.with_extension("bin");
        let bin_name = bin_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Config("--out needs a file name".into()))?
            .to_owned();
        let (json, bin) = exported
            .to_gltf(&bin_name)
            .map_err(|e| Error::Config(e.to_string()))?;
        write(&bin_path, bin)?;
        write(&args.out, &json)?;
    } else {
        let glb = exported
            .to_glb()
            .map_err(|e| Error::Config(e.to_string()))?;
        write(&args.out, &glb)?;
    }
    println!(
        "exported session {session} at position {} ({} entities) to {}; state {}",
        provenance.position,
        only.map_or(scene.entities.len(), <[_]>::len),
        args.out.display(),
        provenance.log_state_hash.map_or_else(
            || format!(
                "scene {} (no log state hash: the replay did not hold every entry from the first; \
                 `--full-replay` holds them, unless older history was rotated into an archive)",
                hex::encode(provenance.scene_state_hash)
            ),
            hex::encode
        )
    );
    Ok(())
}

fn progress(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = len.map_or_else(
        indicatif::ProgressBar::new_spinner,
        indicatif::ProgressBar::new,
    );
    let style =
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} records ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

fn backup(args: &BackupArgs) -> Result<(), Error> {
    let store = open_existing(&args.data.data_dir, args.store)?;
    let mut total = 0u64;
    for tree in store::Tree::ALL {
        store
            .scan(tree, &[], &mut |_, _| {
                total = total.saturating_add(1);
                true
            })
            .map_err(|e| Error::Io(e.to_string()))?;
    }
    let bar = progress(Some(total), "backing up");
    let records = store::backup::write(store.as_ref(), &args.out, Some(&bar)).map_err(Error::Io)?;
    bar.finish_and_clear();
    println!("backup written: {} ({records} records)", args.out.display());
    Ok(())
}

fn restore(args: &RestoreArgs) -> Result<(), Error> {
    let dir = &args.data.data_dir;
    for existing in ["store.redb", "store.sled"] {
        if dir.join(existing).exists() {
            return Err(Error::Config(format!(
                "{} already has a store ({existing}); restore into an empty data dir",
                dir.display()
            )));
        }
    }
    let mut store = store::open(args.store, dir).map_err(|e| Error::Io(e.to_string()))?;
    let bar = progress(None, "restoring");
    let records =
        store::backup::restore(&args.from, store.as_mut(), Some(&bar)).map_err(Error::Io)?;
    bar.finish_and_clear();
    println!("restored {records} records into {}", dir.display());
    println!(
        "copy server.key, cert.der, cert.key.der, admin-token.sha256 and sessions.json from the old data dir too"
    );
    Ok(())
}

/// A bare HTTP/1.1 `GET /healthz`: the image has no shell and no curl.
fn healthcheck(args: &HealthArgs) -> Result<(), Error> {
    use std::io::{Read as _, Write as _};
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let mut stream = std::net::TcpStream::connect_timeout(&args.http_addr, timeout)
        .map_err(|e| Error::Io(format!("{}: {e}", args.http_addr)))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::Io(e.to_string()))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| Error::Io(e.to_string()))?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.http_addr
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| Error::Io(e.to_string()))?;
    let mut response = Vec::new();
    let _ = stream.take(4096).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    if text.starts_with("HTTP/1.1 200") {
        println!("healthy");
        Ok(())
    } else {
        Err(Error::Io(format!(
            "unhealthy: {}",
            text.lines().next().unwrap_or("no answer")
        )))
    }
}
