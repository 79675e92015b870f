//! The headless simulator against a real server (in this process: real QUIC on 127.0.0.1:0, a
//! real store in a temp dir): a scripted controller adds a cube and moves it by grabbing; a
//! native test client sees the same transform; a command from that client reaches the
//! simulator's replica; the simulator's screenshot shows the cube (pixels). Rendering runs on
//! whatever Vulkan adapter exists (lavapipe on CI: `mesa-vulkan-drivers`).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::registry::CommandKind;
use meshwork_protocol::{Command, Ed25519Signer, EntityId, Role};
use meshwork_quest::app::App;
use meshwork_quest::net::Net;
use meshwork_quest::render::Renderer;
use meshwork_quest::sim;
use meshwork_server::config::Settings;
use meshwork_server::data::DataDir;
use meshwork_server::{Listeners, start};
use meshwork_testkit::{Client, random_signer};

/// A real server in this process (QUIC on 127.0.0.1:0, a store in a temp dir, kept alive by
/// the returned directory) and an editor's ticket to it.
async fn serve() -> (
    tempfile::TempDir,
    meshwork_server::ServerHandle,
    meshwork_protocol::wire::JoinTicket,
) {
    let dir = tempfile::tempdir().unwrap();
    let settings = loopback(dir.path());
    let data = DataDir::open_or_init(dir.path(), &[]).unwrap();
    let listeners = Listeners::bind(&settings).unwrap();
    let server = start(settings, listeners, data).await.unwrap();
    let expires = meshwork_server::driver::now_ms() + 3_600_000;
    let ticket = server.ticket(Role::Editor, expires).unwrap();
    (dir, server, ticket)
}

/// Settings for a server on loopback ports the OS picks, its store in `dir`.
fn loopback(dir: &std::path::Path) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        quic_addr: "127.0.0.1:0".parse().unwrap(),
        rtc_addr: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    }
}

/// A simulator run's report and its last frame's pixels.
type Simulated = (Result<sim::Report, String>, Option<Vec<u8>>);

/// Runs `script` in the headless simulator (its own thread; a Vulkan adapter, lavapipe on CI)
/// joined with `ticket`, at `size`, for at most `frames`; saves the last frame to `shot`.
fn simulate(
    ticket: &meshwork_protocol::wire::JoinTicket,
    script: &'static str,
    size: (u32, u32),
    frames: u64,
    shot: Option<std::path::PathBuf>,
) -> tokio::task::JoinHandle<Simulated> {
    let script = sim::parse(script).unwrap();
    let ticket = ticket.clone();
    tokio::task::spawn_blocking(move || {
        let mut renderer = Renderer::headless(size.0, size.1)
            .expect("a Vulkan adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
        let net = Net::connect(&ticket).unwrap();
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let mut app = App::new(Ed25519Signer::from_seed(seed), ticket.invite.clone(), 0.05);
        let report = sim::run(&mut app, &net, &mut renderer, &script, frames);
        if let Some(shot) = shot {
            renderer.save_png(&shot).unwrap();
        }
        (report, renderer.read_rgba().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_controller_edits_with_a_native_client() {
    let (_dir, server, ticket) = serve().await;

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quest-simulator.png");
    let simulator = simulate(
        &ticket,
        include_str!("scripts/add-move-wait.txt"),
        (480, 360),
        5000,
        Some(shot.clone()),
    );

    // The native client sees the simulator's cube arrive and then move 0.5 m along +X.
    let mut client = Client::join(&ticket, random_signer()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let cube = loop {
        let _ = client.next(Duration::from_millis(20)).await;
        let moved = client
            .replica()
            .scene()
            .entities
            .iter()
            .find(|(id, e)| id.namespace() != client.author() && e.transform.translation.x > 0.6)
            .map(|(id, e)| (*id, e.transform));
        if let Some(found) = moved {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the simulator's moved cube never reached the client"
        );
    };
    let (cube_id, t) = cube;
    assert!(
        (t.translation - Vec3::new(0.7, 0.25, -1.75)).length() < 0.02,
        "{t:?}"
    );
    assert!((t.scale - Vec3::splat(0.5)).length() < 1e-4);

    // The client's own command reaches the simulator's replica (its script waits for it).
    let sphere = EntityId::new(client.author(), 1);
    client
        .submit_acked(
            vec![Command::Spawn {
                entity: sphere,
                primitive: Primitive::Sphere,
                transform: Transform {
                    translation: Vec3::new(-0.6, 0.4, -1.6),
                    scale: Vec3::splat(0.4),
                    ..Transform::IDENTITY
                },
            }],
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let (report, pixels) = simulator.await.unwrap();
    let report = report.unwrap();
    let ids: Vec<u64> = report
        .entities
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.contains(&cube_id.0) && ids.contains(&sphere.0),
        "{ids:?}"
    );
    assert!(report.haptics > 0, "adds and grabs pulse the controller");
    assert_eq!(
        report.tool, "Add(Cylinder)",
        "the panel's button switched the tool"
    );
    assert!(report.notices.is_empty(), "{:?}", report.notices);
    // Same state everywhere: simulator, native client, server.
    let end = Instant::now() + Duration::from_secs(10);
    while client.replica().scene().entities.len() < 2 && Instant::now() < end {
        let _ = client.next(Duration::from_millis(20)).await;
    }
    assert_eq!(
        report.state_hash,
        hex::encode(client.replica().scene().state_hash())
    );

    // The screenshot shows the orange cube: count orange pixels.
    let pixels = pixels.unwrap();
    let orange = pixels
        .chunks_exact(4)
        .filter(|p| p[0] > 150 && p[0] > p[1].saturating_add(40) && p[0] > p[2].saturating_add(90))
        .count();
    assert!(orange > 300, "{orange} orange pixels in {}", shot.display());
    // The off-hand panel is drawn: its lit (active tool) button is this blue.
    let panel_blue = pixels
        .chunks_exact(4)
        .filter(|p| p[0].abs_diff(70) < 30 && p[1].abs_diff(130) < 30 && p[2] > 200)
        .count();
    assert!(
        panel_blue > 4,
        "{panel_blue} panel pixels in {}",
        shot.display()
    );
    eprintln!(
        "simulator: {} frames on {}, cpu p50 {:.2} ms, render p50 {:.2} ms, {orange} cube pixels",
        report.frames, report.adapter, report.cpu_ms[0], report.render_ms[0]
    );
    server.shutdown_and_wait().await;
}

/// Add, grab-move, undo on the controller (a left-stick flick), then redo and undo with the
/// panel's buttons: the native test client sees the cube back where it was added, and the log
/// holds the simulator's grab, undo, redo and undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_on_the_controller_puts_the_cube_back() {
    let (_dir, server, ticket) = serve().await;
    let mut client = Client::join(&ticket, random_signer()).await.unwrap();

    let (report, _) = simulate(
        &ticket,
        include_str!("scripts/add-move-undo.txt"),
        (320, 240),
        5000,
        None,
    )
    .await
    .unwrap();
    let report = report.unwrap();
    assert!(
        report.notices.is_empty(),
        "no refusals: {:?}",
        report.notices
    );
    let sim_author = meshwork_protocol::AuthorId(report.author.unwrap());

    // The native client reaches the simulator's final state.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hex::encode(client.replica().scene().state_hash()) != report.state_hash {
        assert!(
            Instant::now() < deadline,
            "the client never reached the simulator's state"
        );
        let _ = client.next(Duration::from_millis(20)).await;
    }
    let (_, cube) = client
        .replica()
        .scene()
        .entities
        .iter()
        .find(|(id, _)| id.namespace() == sim_author)
        .expect("the simulator's cube");
    assert!(
        (cube.transform.translation - Vec3::new(0.2, 0.25, -1.75)).length() < 0.02,
        "back where it was added: {:?}",
        cube.transform
    );

    // What the simulator did, in the log: add (one step), grab, undo, redo, undo.
    client.fetch_log(0).await.unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !client.seen.history_done {
        assert!(Instant::now() < end, "the log never arrived");
        let _ = client.next(Duration::from_millis(20)).await;
    }
    let kinds: Vec<CommandKind> = client
        .seen
        .entries
        .values()
        .filter_map(|e| e.decode_body().ok())
        .filter(|b| b.author == sim_author)
        .map(|b| b.command.kind())
        .filter(|k| !matches!(k, CommandKind::Select))
        .collect();
    assert_eq!(
        kinds,
        vec![
            CommandKind::Step,
            CommandKind::Spawn,
            CommandKind::SetColor,
            CommandKind::Translate,
            CommandKind::Undo,
            CommandKind::Redo,
            CommandKind::Undo,
        ]
    );
    assert!(report.haptics > 0);
    server.shutdown_and_wait().await;
}

/// Trigger-and-pull extrudes the cube's top face and the vertex tool moves a corner of the new
/// top: the native test client sees the resulting mesh (ten faces, the new top at the pulled
/// height, the corner moved); its selection of the cube shows in the simulator in its colour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_extrudes_a_face_and_moves_a_vertex() {
    let (_dir, server, ticket) = serve().await;
    let mut client = Client::join(&ticket, random_signer()).await.unwrap();

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quest-extrude.png");
    let simulator = simulate(
        &ticket,
        include_str!("scripts/extrude-vertex.txt"),
        (480, 360),
        8000,
        Some(shot.clone()),
    );

    // The native client waits for the moved corner, then selects the cube.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cube = loop {
        let _ = client.next(Duration::from_millis(20)).await;
        let done = client
            .replica()
            .scene()
            .entities
            .iter()
            .find_map(|(id, e)| {
                let m = e.geometry.edit_mesh(e.spawned_by);
                let moved = m
                    .vertices()
                    .values()
                    .any(|p| (*p - Vec3::new(0.7, 1.1, 0.5)).length() < 1e-3);
                (id.namespace() != client.author() && moved).then_some((*id, m))
            });
        if let Some(found) = done {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the extruded and moved cube never reached the client"
        );
    };
    let (cube_id, mesh) = cube;
    assert_eq!(
        mesh.faces().len(),
        10,
        "a cube with its top extruded: 6 + 4 sides"
    );
    // The gestures were streamed as they happened: extrude and vertex previews, then their ends.
    let kinds: Vec<&str> = client
        .seen
        .edit_previews
        .iter()
        .map(|p| match &p.preview.command {
            Some(Command::ExtrudeFaces { .. }) => "extrude",
            Some(Command::MoveVertices { .. }) => "move",
            Some(_) => "other",
            None => "end",
        })
        .collect();
    assert!(
        kinds.contains(&"extrude") && kinds.contains(&"move") && kinds.contains(&"end"),
        "{kinds:?}"
    );
    let top: Vec<Vec3> = mesh
        .vertices()
        .values()
        .copied()
        .filter(|p| (p.y - 1.1).abs() < 1e-3)
        .collect();
    assert_eq!(
        top.len(),
        4,
        "the new top, pulled 0.3 m = 0.6 entity units up: {top:?}"
    );
    mesh.check().unwrap();
    client
        .submit_acked(
            vec![Command::Select {
                entities: vec![cube_id],
            }],
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let (report, pixels) = simulator.await.unwrap();
    let report = report.unwrap();
    assert!(
        report.notices.is_empty(),
        "no refusals: {:?}",
        report.notices
    );
    assert_eq!(
        report.selection_markers, 8,
        "the other member's selection is marked"
    );
    // The markers are in the client's colour: count pixels near it (lit, so within a margin).
    let [r, g, b] = meshwork_protocol::presence::author_color(client.author());
    let srgb = |v: f32| (v.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0) as i32;
    let want = [srgb(r), srgb(g), srgb(b)];
    let near = pixels
        .unwrap()
        .chunks_exact(4)
        .filter(|p| {
            (0..3)
                .map(|i| (i32::from(p[i]) - want[i]).abs())
                .max()
                .unwrap_or(255)
                < 60
        })
        .count();
    assert!(
        near > 10,
        "{near} pixels in the selector's colour in {}",
        shot.display()
    );
    let end = Instant::now() + Duration::from_secs(10);
    while hex::encode(client.replica().scene().state_hash()) != report.state_hash {
        assert!(
            Instant::now() < end,
            "the client never reached the simulator's state"
        );
        let _ = client.next(Duration::from_millis(20)).await;
    }
    server.shutdown_and_wait().await;
}

/// Pumps the headset's app and network (no rendering) until `done` or 20 s.
fn pump_until(app: &mut App, net: &Net, what: &str, done: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        meshwork_quest::pump::Pump::receive(app, net).unwrap();
        for m in app.poll_transmit() {
            net.send(&m);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The headset's network thread through a server restart: the server shuts down (its
/// connections close), the headset keeps editing offline, a server comes back on the same
/// address and store, and the headset reconnects by itself (backoff), resumes from its
/// replica's position, and its offline edit lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headset_reconnects_by_itself_and_its_offline_edit_lands() {
    let dir = tempfile::tempdir().unwrap();
    let settings = loopback(dir.path());
    let data = DataDir::open_or_init(dir.path(), &[]).unwrap();
    let listeners = Listeners::bind(&settings).unwrap();
    let server = start(settings.clone(), listeners, data).await.unwrap();
    let expires = meshwork_server::driver::now_ms() + 3_600_000;
    let ticket = server.ticket(Role::Editor, expires).unwrap();
    let quic = server.quic_addr;

    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let headset_ticket = ticket.clone();
    let run = tokio::task::spawn_blocking(move || {
        let net = Net::connect(&headset_ticket).unwrap();
        let mut app = App::new(
            Ed25519Signer::from_seed([7; 32]),
            headset_ticket.invite.clone(),
            0.05,
        );
        pump_until(&mut app, &net, "the join", App::live);
        app.spawn_grid(1, 0);
        pump_until(&mut app, &net, "the first cube's ack", |a| {
            a.connection().unacked().count() == 0
                && a.connection().replica().scene().entities.len() == 1
        });
        tx.send(()).unwrap();
        // The server goes away: the headset notices and keeps editing.
        pump_until(&mut app, &net, "the drop", |a| !a.connection().is_joined());
        app.spawn_grid(1, 0);
        assert_eq!(
            app.connection().unacked().count(),
            1,
            "the offline edit is kept"
        );
        assert_eq!(
            app.entity_draws().len(),
            2,
            "and shown at once, while the replica holds one cube"
        );
        back_tx.send(()).unwrap();
        pump_until(
            &mut app,
            &net,
            "the reconnect and the offline edit's ack",
            |a| a.connection().is_joined() && a.connection().unacked().count() == 0,
        );
        pump_until(&mut app, &net, "the replica with both cubes", |a| {
            a.connection().replica().scene().entities.len() == 2
        });
        assert_eq!(
            app.notices.last().map(String::as_str),
            Some("back online"),
            "the panel said offline, then says so: {:?}",
            app.notices
        );
        hex::encode(app.connection().replica().scene().state_hash())
    });
    tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap();
    server.shutdown_and_wait().await;
    tokio::task::spawn_blocking(move || back_rx.recv().unwrap())
        .await
        .unwrap();
    // Back on the same address and store (the address the headset's ticket names).
    let settings = Settings {
        quic_addr: quic,
        ..settings
    };
    let data = DataDir::open_or_init(dir.path(), &[]).unwrap();
    // The old server's socket may take a moment to be released: poll the bind, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listeners = loop {
        match Listeners::bind(&settings) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "the address stays taken: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let server = start(settings, listeners, data).await.unwrap();
    let hash = run.await.unwrap();

    let mut client = Client::join(
        &server.ticket(Role::Viewer, expires).unwrap(),
        random_signer(),
    )
    .await
    .unwrap();
    client.catch_up(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(client.replica().scene().entities.len(), 2, "each cube once");
    assert_eq!(hex::encode(client.replica().scene().state_hash()), hash);
    server.shutdown_and_wait().await;
}
