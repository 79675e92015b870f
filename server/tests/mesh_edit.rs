//! Concurrent mesh editing over real QUIC with the real binary: two editors edit one cube at the
//! same time, naming its elements by the ids their own replicas derived (one extrudes the top
//! face, the other moves the bottom face's vertices), each without waiting for the other. Both
//! edits are accepted, both replicas end byte-identical to the server's scene, the mesh shows
//! both edits, a late joiner's snapshot holds the same edited mesh, and a restart replays the
//! stored log to the same scene.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::command::{ExtrudeDirection, Primitive, Transform};
use meshwork_protocol::editmesh::{EditMesh, FaceKey, VertexKey};
use meshwork_protocol::scene::Geometry;
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(20);

async fn server_scene(server: &ServerProcess, token: &str) -> (u64, String) {
    http::Admin {
        addr: server.http,
        token: token.to_owned(),
    }
    .scene()
    .await
    .unwrap()
}

/// Reads messages until the replica is synced at `position` or later.
async fn catch_up(c: &mut Client, position: u64) {
    let end = Instant::now() + WAIT;
    while !(c.replica().is_synced() && c.replica().scene().position >= position) {
        assert!(
            Instant::now() < end,
            "replica of {} stuck at {}",
            c.author(),
            c.replica().scene().position
        );
        let _ = c.next(Duration::from_millis(50)).await;
    }
}

/// The entity's mesh as this client's replica sees it (its element ids included).
fn mesh_in(c: &Client, entity: EntityId) -> EditMesh {
    let e = c
        .replica()
        .scene()
        .entities
        .get(&entity)
        .unwrap_or_else(|| panic!("{entity} is not in the replica of {}", c.author()));
    e.geometry.edit_mesh(e.spawned_by)
}

/// The face whose corners all lie at height `y` (entity space).
fn face_at_height(mesh: &EditMesh, y: f32) -> (FaceKey, Vec<VertexKey>) {
    let (face, corners) = mesh
        .faces()
        .iter()
        .find(|(_, corners)| {
            corners
                .iter()
                .all(|v| (mesh.vertices()[v].y - y).abs() < 1e-6)
        })
        .unwrap_or_else(|| panic!("no face at y = {y}"));
    (*face, corners.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_extrude_and_vertex_move_on_one_cube_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    let mut a = Client::join(&ticket, random_signer()).await.unwrap();
    let mut b = Client::join(&ticket, random_signer()).await.unwrap();
    let cube = EntityId::new(a.author(), 1);
    let spawn = Command::Spawn {
        entity: cube,
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    };
    a.submit_acked(vec![spawn], WAIT).await.unwrap();
    let (spawned_at, _) = server_scene(&server, &token).await;
    catch_up(&mut a, spawned_at).await;
    catch_up(&mut b, spawned_at).await;

    // Each editor picks its elements from its own replica: the ids are the same on both.
    let seen_by_a = mesh_in(&a, cube);
    let seen_by_b = mesh_in(&b, cube);
    assert_eq!(seen_by_a, seen_by_b, "both replicas derive the same ids");
    let (top, top_corners) = face_at_height(&seen_by_a, 0.5);
    let (_, bottom_corners) = face_at_height(&seen_by_b, -0.5);
    assert_eq!(seen_by_a.faces().len(), 6);
    assert_eq!(seen_by_a.vertices().len(), 8);

    let extrude = Command::ExtrudeFaces {
        entity: cube,
        faces: vec![top],
        direction: ExtrudeDirection::Normal { distance_m: 0.5 },
        snap_m: None,
    };
    // Absolute positions: the bottom face drops to y = -1.
    let moves: Vec<(VertexKey, Vec3)> = bottom_corners
        .iter()
        .map(|v| {
            let p = seen_by_b.vertices()[v];
            (*v, Vec3::new(p.x, -1.0, p.z))
        })
        .collect();
    let move_bottom = Command::MoveVertices {
        entity: cube,
        moves: moves.clone(),
    };
    // Submitted together, neither having seen the other's edit.
    let (sent_a, sent_b) = tokio::join!(a.submit(vec![extrude]), b.submit(vec![move_bottom]));
    let (sent_a, sent_b) = (sent_a.unwrap(), sent_b.unwrap());
    let body_a = sent_a[0].decode_body().unwrap();
    let body_b = sent_b[0].decode_body().unwrap();
    assert!(
        body_a.seen_lamport < body_b.lamport && body_b.seen_lamport < body_a.lamport,
        "the two edits are concurrent"
    );
    for (c, seq) in [(&mut a, body_a.seq), (&mut b, body_b.seq)] {
        let end = Instant::now() + WAIT;
        c.until(end, |s| {
            s.acks.contains_key(&seq) || s.refusals.iter().any(|r| r.seq == seq)
        })
        .await
        .unwrap();
        assert!(
            c.seen.refusals.is_empty(),
            "{} was refused: {:?}",
            c.author(),
            c.seen.refusals
        );
    }

    // Both replicas end on the server's scene, byte for byte.
    let (position, hash) = server_scene(&server, &token).await;
    assert_eq!(position, spawned_at + 2, "the spawn and both edits");
    catch_up(&mut a, position).await;
    catch_up(&mut b, position).await;
    for c in [&a, &b] {
        assert_eq!(
            hex::encode(c.replica().scene().state_hash()),
            hash,
            "replica of {} differs from the server",
            c.author()
        );
    }
    assert_eq!(a.replica().scene().encode(), b.replica().scene().encode());

    // The mesh really changed, by both edits.
    let geometry = &a.replica().scene().entities[&cube].geometry;
    assert!(matches!(geometry, Geometry::Mesh(_)), "the cube was edited");
    let mesh = mesh_in(&a, cube);
    assert_eq!(
        mesh.faces().len(),
        10,
        "the top face gained four side quads"
    );
    assert_eq!(
        mesh.vertices().len(),
        12,
        "four new vertices carry the extruded face"
    );
    assert_eq!(mesh.triangle_count(), 20);
    let moved_top = &mesh.faces()[&top];
    assert!(
        moved_top.iter().all(|v| !top_corners.contains(v)),
        "the extruded face keeps its id and moves onto new vertices"
    );
    for v in moved_top {
        assert!(
            (mesh.vertices()[v].y - 1.0).abs() < 1e-6,
            "extruded 0.5 m up"
        );
    }
    for v in &top_corners {
        assert!(
            (mesh.vertices()[v].y - 0.5).abs() < 1e-6,
            "the vertices left behind stay"
        );
    }
    for (v, p) in &moves {
        assert_eq!(mesh.vertices()[v], *p, "the bottom vertex moved");
    }

    // A late joiner loads the edited mesh from a snapshot and lands on the same bytes.
    let mut late = Client::join(&ticket, random_signer()).await.unwrap();
    catch_up(&mut late, position).await;
    assert_eq!(
        late.replica().scene().encode(),
        a.replica().scene().encode()
    );

    // The stored log replays to the same scene after a restart.
    drop((a, b, late));
    assert!(server.terminate(WAIT).success());
    drop(server);
    let server = ServerProcess::start(BIN, &data, &[]);
    assert_eq!(
        server_scene(&server, &token).await,
        (position, hash),
        "the restarted server replays the mesh edits to the same scene"
    );
}
