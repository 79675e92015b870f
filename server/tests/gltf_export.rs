//! glTF export: the scenes of the export acceptance (every primitive; an extruded and
//! Catmull–Clark-smoothed mesh; a mirrored one; 1000 entities) exported as GLB and as
//! `.gltf` + `.bin`, read back with the `gltf` crate (positions, normals, face counts, names,
//! transforms, materials, provenance); the Khronos glTF-Validator on every file (run by
//! `cargo xtask ci`, which installs it); and the real binary: `GET …/export.glb` for the admin
//! and for a member's ticket, refused for a ticket of another session, and the offline
//! `export` command, `--at` an earlier position, whose provenance matches `verify-log`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::float_cmp,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use sha2::Digest as _;

use glam::{Quat, Vec3, Vec4};
use meshwork_protocol::command::{ExtrudeDirection, Material, Primitive, Transform};
use meshwork_protocol::editmesh::{Axis, FaceKey, VertexKey};
use meshwork_protocol::scene::{Geometry, Scene};
use meshwork_protocol::{AuthorId, Command, CommandId, EntityId, PublicKey, Role, SessionId};
use meshwork_server::export::{Contributor, Provenance, export};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const AUTHOR: AuthorId = AuthorId(3);
const WAIT: Duration = Duration::from_secs(20);

/// Applies commands in order, as the server would accept them (each must succeed).
struct Builder {
    scene: Scene,
    lamport: u64,
}

impl Builder {
    fn new() -> Self {
        Self {
            scene: Scene::new(),
            lamport: 0,
        }
    }

    fn apply(&mut self, command: Command) -> &mut Self {
        self.lamport += 1;
        let id = CommandId {
            lamport: self.lamport,
            author: AUTHOR,
        };
        self.scene
            .try_apply(
                id,
                AUTHOR,
                &command,
                &meshwork_protocol::scene::Limits::DEFAULT,
            )
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        self
    }

    fn spawn(&mut self, n: u32, primitive: Primitive, at: Vec3) -> EntityId {
        let entity = EntityId::new(AUTHOR, n);
        self.apply(Command::Spawn {
            entity,
            primitive,
            transform: Transform {
                translation: at,
                rotation: Quat::from_rotation_y(0.25 * n as f32),
                scale: Vec3::new(1.0, 1.0 + 0.1 * n as f32, 1.0),
            },
        });
        entity
    }

    fn mesh_faces(&self, e: EntityId) -> Vec<(FaceKey, Vec<VertexKey>)> {
        let entity = &self.scene.entities[&e];
        let m = entity.geometry.edit_mesh(entity.spawned_by);
        m.faces().iter().map(|(f, c)| (*f, c.clone())).collect()
    }

    fn position(&self, e: EntityId, v: VertexKey) -> Vec3 {
        let entity = &self.scene.entities[&e];
        entity.geometry.edit_mesh(entity.spawned_by).vertices()[&v]
    }
}

/// Every primitive, each with its own name, colour, material and transform.
fn primitives() -> Scene {
    let mut b = Builder::new();
    let all = [
        Primitive::Cube,
        Primitive::Pyramid,
        Primitive::Plane,
        Primitive::Cylinder,
        Primitive::Sphere,
    ];
    for (i, p) in all.into_iter().enumerate() {
        let n = i as u32 + 1;
        let e = b.spawn(n, p, Vec3::new(2.0 * n as f32, 0.0, 0.0));
        b.apply(Command::SetName {
            entity: e,
            name: format!("{p:?} №{n}"),
        });
        b.apply(Command::SetColor {
            entity: e,
            rgba: Vec4::new(0.1 * n as f32, 0.5, 0.9, if n == 2 { 0.5 } else { 1.0 }),
        });
        b.apply(Command::SetMaterial {
            entity: e,
            material: Material {
                metallic: 0.2 * n as f32 - 0.2,
                roughness: 0.9,
            },
        });
    }
    // A rotation as a client may send it: within the session's 1e-3 of unit length, but not
    // within glTF's (the export normalizes it).
    b.apply(Command::Spawn {
        entity: EntityId::new(AUTHOR, 6),
        primitive: Primitive::Cube,
        transform: Transform {
            translation: Vec3::new(0.0, 3.0, 0.0),
            rotation: Quat::from_xyzw(0.0, 0.707, 0.0, 0.707),
            scale: Vec3::ONE,
        },
    });
    b.scene
}

/// A cube with its top face extruded, then smoothed twice (Catmull–Clark, whole mesh).
fn extruded_and_smoothed() -> Scene {
    let mut b = Builder::new();
    let e = b.spawn(1, Primitive::Cube, Vec3::ZERO);
    let top = b
        .mesh_faces(e)
        .into_iter()
        .find(|(_, c)| c.iter().all(|v| (b.position(e, *v).y - 0.5).abs() < 1e-6))
        .unwrap()
        .0;
    b.apply(Command::ExtrudeFaces {
        entity: e,
        faces: vec![top],
        direction: ExtrudeDirection::Normal { distance_m: 0.75 },
        snap_m: None,
    });
    b.apply(Command::Smooth {
        entity: e,
        faces: vec![],
        levels: 2,
    });
    b.scene
}

/// Half a cube (its −x face deleted, that side moved onto x = 0) mirrored across X with weld:
/// a closed box of 10 faces.
fn mirrored() -> Scene {
    let mut b = Builder::new();
    let e = b.spawn(1, Primitive::Cube, Vec3::ZERO);
    let (side, corners) = b
        .mesh_faces(e)
        .into_iter()
        .find(|(_, c)| c.iter().all(|v| (b.position(e, *v).x + 0.5).abs() < 1e-6))
        .unwrap();
    b.apply(Command::DeleteElements {
        entity: e,
        vertices: vec![],
        edges: vec![],
        faces: vec![side],
    });
    let moves = corners
        .iter()
        .map(|v| {
            let p = b.position(e, *v);
            (*v, Vec3::new(0.0, p.y, p.z))
        })
        .collect();
    b.apply(Command::MoveVertices { entity: e, moves });
    b.apply(Command::Mirror {
        entity: e,
        axis: Axis::X,
        weld: true,
    });
    b.scene
}

/// 1000 entities: every primitive kind, ten colours, some edited.
fn crowd() -> Scene {
    let mut b = Builder::new();
    let kinds = [
        Primitive::Cube,
        Primitive::Pyramid,
        Primitive::Plane,
        Primitive::Cylinder,
        Primitive::Sphere,
    ];
    for i in 0..1000u32 {
        let e = b.spawn(
            i + 1,
            kinds[i as usize % kinds.len()],
            Vec3::new((i % 40) as f32, 0.0, (i / 40) as f32),
        );
        b.apply(Command::SetColor {
            entity: e,
            rgba: Vec4::new((i % 10) as f32 / 10.0, 0.3, 0.6, 1.0),
        });
        if i % 100 == 0 {
            let first = b.mesh_faces(e)[0].0;
            b.apply(Command::SubdivideFaces {
                entity: e,
                faces: vec![first],
                cuts: 2,
            });
        }
    }
    b.scene
}

fn provenance(scene: &Scene) -> Provenance {
    Provenance {
        session: SessionId([7; 16]),
        position: scene.position,
        scene_state_hash: scene.state_hash(),
        log_state_hash: Some([9; 32]),
        chain_head: [5; 32],
        server_key: PublicKey([1; 32]),
        authors: vec![Contributor {
            author: AUTHOR,
            public_key: PublicKey([2; 32]),
            role: Role::Editor,
            entries: scene.position,
        }],
    }
}

fn cases() -> Vec<(&'static str, Scene)> {
    vec![
        ("primitives", primitives()),
        ("extruded_smoothed", extruded_and_smoothed()),
        ("mirrored", mirrored()),
        ("crowd_1000", crowd()),
    ]
}

/// Reads a GLB back and checks it against the scene: one node per entity with its name and
/// transform, its triangles with their corner positions and unit normals, its material, and
/// the provenance.
fn check_against(scene: &Scene, glb: &[u8]) {
    let doc = gltf::Gltf::from_slice(glb).unwrap();
    let bin = doc.blob.clone().unwrap();
    let extras: serde_json::Value =
        serde_json::from_str(doc.document.as_json().asset.extras.as_ref().unwrap().get()).unwrap();
    let p = &extras["meshwork"];
    assert_eq!(p["position"], scene.position);
    assert_eq!(p["sceneStateHash"], hex::encode(scene.state_hash()));
    assert_eq!(p["authors"][0]["author"], AUTHOR.0);
    let nodes: Vec<_> = doc.document.nodes().collect();
    assert_eq!(nodes.len(), scene.entities.len());
    for (node, (id, e)) in nodes.iter().zip(&scene.entities) {
        let name = if e.name.value.is_empty() {
            id.to_string()
        } else {
            e.name.value.clone()
        };
        assert_eq!(node.name(), Some(name.as_str()));
        let (t, _, s) = node.transform().decomposed();
        // As written in the file (the reader may normalize on the way).
        let r = doc.document.as_json().nodes[node.index()]
            .rotation
            .unwrap()
            .0;
        assert_eq!(Vec3::from(t), e.transform.translation);
        let want = e.transform.rotation.normalize();
        assert!(
            Quat::from_array(r).abs_diff_eq(want, 1e-7),
            "{id}: rotation {r:?}"
        );
        assert!((Quat::from_array(r).length() - 1.0).abs() < 1e-6);
        assert_eq!(Vec3::from(s), e.transform.scale);
        let render = e.geometry.render();
        let mesh = node.mesh().unwrap();
        let prim = mesh.primitives().next().unwrap();
        let reader = prim.reader(|_| Some(&bin));
        let positions: Vec<[f32; 3]> = reader.read_positions().unwrap().collect();
        let indices: Vec<u32> = reader.read_indices().unwrap().into_u32().collect();
        assert_eq!(indices, render.indices, "{id}: triangles");
        for (got, want) in positions.iter().zip(&render.positions) {
            for k in 0..3 {
                assert!((got[k] - want[k]).abs() <= 1e-6, "{id}: position");
            }
        }
        assert_eq!(positions.len(), render.positions.len());
        for n in reader.read_normals().unwrap() {
            let len = Vec3::from(n).length();
            assert!((len - 1.0).abs() < 1e-3, "{id}: a normal of length {len}");
        }
        let pbr = prim.material().pbr_metallic_roughness();
        assert_eq!(Vec4::from(pbr.base_color_factor()), e.color.value);
        assert_eq!(pbr.metallic_factor(), e.material.value.metallic);
        assert_eq!(pbr.roughness_factor(), e.material.value.roughness);
        let node_extras: serde_json::Value =
            serde_json::from_str(node.extras().as_ref().unwrap().get()).unwrap();
        assert_eq!(node_extras["meshwork"]["entity"], id.to_string());
    }
}

#[test]
fn every_case_exports_and_reads_back_as_the_scene() {
    for (name, scene) in cases() {
        let exported = export(&scene, None, &provenance(&scene)).unwrap();
        let glb = exported.to_glb().unwrap();
        check_against(&scene, &glb);
        // The `.gltf` form holds the same document, its buffer named by the given file.
        let (json, bin) = exported.to_gltf(&format!("{name}.bin")).unwrap();
        let doc = gltf::Gltf::from_slice(&json).unwrap();
        let buffer = doc.document.buffers().next().unwrap();
        assert!(
            matches!(buffer.source(), gltf::buffer::Source::Uri(u) if u == format!("{name}.bin"))
        );
        assert_eq!(buffer.length(), bin.len());
    }
    // Unedited primitives of one kind and material share one mesh.
    let crowd = crowd();
    let exported = export(&crowd, None, &provenance(&crowd)).unwrap();
    let doc = gltf::Gltf::from_slice(&exported.to_glb().unwrap()).unwrap();
    assert!(doc.document.meshes().count() < 100, "shared meshes");
    assert_eq!(
        doc.document.materials().count(),
        10,
        "one per distinct colour"
    );
}

/// Export, then import (`meshwork_server::import`): every entity comes back with its name,
/// transform, material and its mesh — the same faces (quads stay quads), each face's corners at
/// the same positions, the same vertex count after welding — from the GLB and from the `.gltf`
/// with its `.bin` beside it; and imported into a fresh scene with `Import`, as the server
/// does, the entities equal the originals.
#[test]
fn an_export_imports_back_as_the_same_meshes() {
    use meshwork_server::import::{ImportLimits, import};
    for (name, scene) in cases() {
        let exported = export(&scene, None, &provenance(&scene)).unwrap();
        let glb = exported.to_glb().unwrap();
        let (json, bin) = exported.to_gltf("my scene.bin").unwrap();
        let bin = bin.to_vec();
        let from_glb = import(&glb, &|_| None, &ImportLimits::DEFAULT).unwrap();
        // The `.bin` is named by a URI reference (`my%20scene.bin`): the file `my scene.bin`.
        let beside = |uri: &str| (uri == "my scene.bin").then(|| bin.clone());
        let from_gltf = import(&json, &beside, &ImportLimits::DEFAULT).unwrap();
        assert_eq!(from_glb, from_gltf, "{name}: GLB and .gltf give the same");
        // Packed into one GLB (how a `.gltf` and its `.bin` are uploaded): the same again.
        let packed =
            meshwork_server::import::pack_glb(&json, &beside, &ImportLimits::DEFAULT).unwrap();
        assert_eq!(&packed[..4], b"glTF");
        let from_packed = import(&packed, &|_| None, &ImportLimits::DEFAULT).unwrap();
        assert_eq!(from_packed, from_glb, "{name}: packed .gltf");
        assert_eq!(from_glb.len(), scene.entities.len(), "{name}");
        // Into a fresh session's scene as the server does it (read as an upload, then one
        // `Import`): every entity's mesh, name, transform and material as exported.
        let asset = meshwork_protocol::command::AssetId(sha2::Sha256::digest(&glb).into());
        let read = meshwork_server::assets::read_upload(
            asset,
            &glb,
            1 << 30,
            &meshwork_protocol::scene::Limits::NONE,
        )
        .unwrap();
        let mut fresh = Scene::new();
        fresh.provide_asset(asset, std::sync::Arc::new(read));
        let importer = AuthorId(9);
        let import = Command::Import {
            asset,
            first: EntityId::new(importer, 1),
            count: u32::try_from(scene.entities.len()).unwrap(),
        };
        fresh
            .try_apply(
                CommandId {
                    lamport: 1,
                    author: importer,
                },
                importer,
                &import,
                &meshwork_protocol::scene::Limits::NONE,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fresh.entities.len(), scene.entities.len(), "{name}");
        for ((id, want), (_, got)) in scene.entities.iter().zip(&fresh.entities) {
            assert_eq!(got.material.value, want.material.value, "{name} {id}");
            assert_eq!(got.color.value, want.color.value, "{name} {id}");
            assert!((got.transform.translation - want.transform.translation).length() < 1e-6);
            let (a, b) = (
                got.geometry.edit_mesh(got.spawned_by),
                want.geometry.edit_mesh(want.spawned_by),
            );
            assert_eq!(
                (a.faces().len(), a.vertices().len()),
                (b.faces().len(), b.vertices().len()),
                "{name} {id}"
            );
            for (fa, fb) in a.faces().values().zip(b.faces().values()) {
                for (va, vb) in fa.iter().zip(fb) {
                    assert!(
                        (a.vertices()[va] - b.vertices()[vb]).length() <= 1e-6,
                        "{name} {id}"
                    );
                }
            }
            a.check().unwrap();
        }
        // The import walks the scene's nodes in file order: one per entity, in id order.
        for (got, (id, e)) in from_glb.iter().zip(&scene.entities) {
            let want_name = if e.name.value.is_empty() {
                id.to_string()
            } else {
                e.name.value.clone()
            };
            assert_eq!(got.name, want_name);
            assert!((got.transform.translation - e.transform.translation).length() < 1e-6);
            assert!(
                got.transform
                    .rotation
                    .abs_diff_eq(e.transform.rotation.normalize(), 1e-6),
                "{name} {id}: {} vs {}",
                got.transform.rotation,
                e.transform.rotation
            );
            assert!(
                (got.transform.scale - e.transform.scale).length() < 1e-5,
                "{name} {id}"
            );
            assert_eq!(got.color, e.color.value);
            assert_eq!(got.material, e.material.value);
            let mesh = e.geometry.edit_mesh(e.spawned_by);
            assert_eq!(got.faces.len(), mesh.faces().len(), "{name} {id}: faces");
            assert_eq!(
                got.positions.len(),
                mesh.vertices().len(),
                "{name} {id}: vertices"
            );
            for (face, corners) in got.faces.iter().zip(mesh.faces().values()) {
                assert_eq!(face.len(), corners.len(), "{name} {id}: a face's corners");
                for (v, c) in face.iter().zip(corners) {
                    let d = got.positions[*v as usize] - mesh.vertices()[c];
                    assert!(d.length() <= 1e-6, "{name} {id}: a corner moved by {d}");
                }
            }
        }
    }
}

/// Mutated exports (bytes flipped, files cut short, counts and offsets overwritten with huge
/// values) never panic the importer: each is imported or refused with a reason.
/// `MESHWORK_IMPORT_MUTATIONS` sets how many (default 3000).
#[test]
fn mutated_files_never_panic_the_importer() {
    use meshwork_server::import::{ImportLimits, import};
    let scene = extruded_and_smoothed();
    let glb = export(&scene, None, &provenance(&scene))
        .unwrap()
        .to_glb()
        .unwrap();
    let rounds: u64 = std::env::var("MESHWORK_IMPORT_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut imported, mut refused) = (0, 0);
    for round in 0..rounds {
        let mut bytes = glb.clone();
        let at = |r: u64, len: usize| (r % len as u64) as usize;
        match round % 3 {
            0 => {
                for _ in 0..=next() % 8 {
                    let i = at(next(), bytes.len());
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            1 => bytes.truncate(at(next(), bytes.len())),
            _ => {
                let i = at(next(), bytes.len() - 4);
                let huge = [0xFFFF_FFF0u32, 0x7FFF_FFFF, 0x8000_0000][at(next(), 3)];
                bytes[i..i + 4].copy_from_slice(&huge.to_le_bytes());
            }
        }
        match import(&bytes, &|_| None, &ImportLimits::DEFAULT) {
            Ok(_) => imported += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    assert!(
        imported > 0 && refused > 0,
        "{imported} imported, {refused} refused"
    );
}

#[test]
fn a_selection_exports_only_its_entities_and_an_unknown_one_is_refused() {
    let scene = primitives();
    let ids: Vec<EntityId> = scene.entities.keys().copied().take(2).collect();
    let exported = export(&scene, Some(&ids), &provenance(&scene)).unwrap();
    let doc = gltf::Gltf::from_slice(&exported.to_glb().unwrap()).unwrap();
    assert_eq!(doc.document.nodes().count(), 2);
    let ghost = EntityId::new(AUTHOR, 999);
    let err = export(&scene, Some(&[ghost]), &provenance(&scene)).unwrap_err();
    assert!(err.to_string().contains("not in the scene"), "{err}");
}

/// Writes every case as GLB and as `.gltf` + `.bin` and runs the Khronos validator on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the npm package gltf-validator: run by `cargo xtask ci` (wasm step)"]
async fn the_khronos_validator_finds_no_error_and_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, scene) in cases() {
        let exported = export(&scene, None, &provenance(&scene)).unwrap();
        let glb = dir.path().join(format!("{name}.glb"));
        std::fs::write(&glb, exported.to_glb().unwrap()).unwrap();
        let (json, bin) = exported.to_gltf(&format!("{name}.bin")).unwrap();
        std::fs::write(dir.path().join(format!("{name}.bin")), bin).unwrap();
        let gltf = dir.path().join(format!("{name}.gltf"));
        std::fs::write(&gltf, json).unwrap();
        files.push(glb.display().to_string());
        files.push(gltf.display().to_string());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let report = meshwork_testkit::node_json("validate-gltf.mjs", &[], &args).await;
    let results = report["files"].as_array().unwrap();
    assert_eq!(results.len(), files.len());
    for r in results {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["warnings"], 0, "{r}");
    }
}

fn glb_provenance(glb: &[u8]) -> serde_json::Value {
    let doc = gltf::Gltf::from_slice(glb).unwrap();
    let extras = doc
        .document
        .as_json()
        .asset
        .extras
        .as_ref()
        .unwrap()
        .get()
        .to_owned();
    serde_json::from_str::<serde_json::Value>(&extras).unwrap()["meshwork"].clone()
}

/// `GET path` with one header.
async fn get_with(server: &ServerProcess, path: &str, header: (&str, &str)) -> http::Response {
    http::request(server.http, "GET", path, &[header], "")
        .await
        .unwrap()
}

fn run_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_over_http_and_offline_from_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let mut a = Client::join(&ticket, random_signer()).await.unwrap();
    let cube = EntityId::new(a.author(), 1);
    a.submit_acked(
        vec![Command::Spawn {
            entity: cube,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }],
        WAIT,
    )
    .await
    .unwrap();
    a.submit_acked(
        vec![Command::SetName {
            entity: cube,
            name: "the cube".into(),
        }],
        WAIT,
    )
    .await
    .unwrap();
    a.submit_acked(
        vec![Command::Smooth {
            entity: cube,
            faces: vec![],
            levels: 1,
        }],
        WAIT,
    )
    .await
    .unwrap();
    let other_entity = EntityId::new(a.author(), 2);
    a.submit_acked(
        vec![Command::Spawn {
            entity: other_entity,
            primitive: Primitive::Sphere,
            transform: Transform::IDENTITY,
        }],
        WAIT,
    )
    .await
    .unwrap();
    a.catch_up(4, WAIT).await.unwrap();
    let live = a.replica().scene().clone();
    assert!(matches!(live.entities[&cube].geometry, Geometry::Mesh(_)));

    // Over HTTP: the admin, and a member with the ticket, get the same file.
    let path = format!("/api/v1/sessions/{session}/export.glb");
    let bearer = format!("Bearer {token}");
    let by_admin = get_with(&server, &path, ("Authorization", bearer.as_str())).await;
    assert_eq!(by_admin.status, 200, "{}", by_admin.body);
    let glb = by_admin.bytes.clone();
    assert_eq!(&glb[..4], b"glTF");
    let p = glb_provenance(&glb);
    assert_eq!(p["position"], 4);
    assert_eq!(p["sceneStateHash"], hex::encode(live.state_hash()));
    assert_eq!(p["session"], session.to_string());
    let doc = gltf::Gltf::from_slice(&glb).unwrap();
    assert_eq!(
        doc.document.nodes().next().unwrap().name(),
        Some("the cube")
    );
    let member_path = format!("{path}?ticket={}", ticket.to_text());
    let by_member = http::get(server.http, &member_path).await.unwrap();
    assert_eq!(by_member.status, 200, "{}", by_member.body);
    assert_eq!(
        by_member.bytes, glb,
        "the same durable state, the same bytes"
    );
    // The editor's way: the ticket in a header; a viewer's ticket is enough.
    let admin = http::Admin {
        addr: server.http,
        token: token.clone(),
    };
    let viewer = admin.invite(&session.to_string(), "viewer").await.unwrap();
    let by_viewer = get_with(&server, &path, ("X-Meshwork-Ticket", viewer.as_str())).await;
    assert_eq!(by_viewer.status, 200, "{}", by_viewer.body);
    assert_eq!(by_viewer.bytes, glb);
    // A ticket that expired is refused (an invite valid for one second, polled until then).
    let short = admin
        .invite_for(&session.to_string(), "editor", 1)
        .await
        .unwrap();
    let end = Instant::now() + WAIT;
    loop {
        let r = get_with(&server, &path, ("X-Meshwork-Ticket", short.as_str())).await;
        if r.status == 403 {
            assert!(r.body.contains("unexpired"), "{}", r.body);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(Instant::now() < end, "the one-second invite never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An earlier point of the history: before the smooth.
    let earlier = get_with(
        &server,
        &format!("{path}?at=2"),
        ("Authorization", bearer.as_str()),
    )
    .await;
    assert_eq!(earlier.status, 200);
    let before = glb_provenance(&earlier.bytes);
    assert_eq!(before["position"], 2);
    assert_ne!(before["chainHead"], p["chainHead"]);
    assert_ne!(before["sceneStateHash"], p["sceneStateHash"]);
    // A selection, and an entity that is not there.
    let selected = get_with(
        &server,
        &format!("{path}?entities=entity%23{:x}", cube.0),
        ("Authorization", bearer.as_str()),
    )
    .await;
    assert_eq!(selected.status, 200, "{}", selected.body);
    let doc = gltf::Gltf::from_slice(&selected.bytes).unwrap();
    assert_eq!(
        doc.document.nodes().count(),
        1,
        "two entities, one selected"
    );
    assert_eq!(
        doc.document.nodes().next().unwrap().name(),
        Some("the cube")
    );
    let missing = get_with(
        &server,
        &format!("{path}?entities={:x},ffff", cube.0),
        ("Authorization", bearer.as_str()),
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(
        missing.body.contains("not in the scene"),
        "{}",
        missing.body
    );
    let past_end = get_with(
        &server,
        &format!("{path}?at=99"),
        ("Authorization", bearer.as_str()),
    )
    .await;
    assert_eq!(past_end.status, 400);
    assert!(past_end.body.contains("past the end"), "{}", past_end.body);
    // No credentials, a wrong token, a ticket of another session: refused.
    assert_eq!(http::get(server.http, &path).await.unwrap().status, 401);
    let wrong = get_with(&server, &path, ("Authorization", "Bearer nope")).await;
    assert_eq!(wrong.status, 403);
    let other = admin.create_session("elsewhere").await.unwrap();
    let other_path = format!(
        "/api/v1/sessions/{other}/export.glb?ticket={}",
        ticket.to_text()
    );
    let refused = http::get(server.http, &other_path).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Offline, after a clean stop: the same state, and the log state hash verify-log proves.
    drop(a);
    assert!(server.terminate(Duration::from_secs(10)).success());
    let data_dir = data.display().to_string();
    let sid = hex::encode(session.0);
    let verified = run_cli(&["verify-log", "--data-dir", &data_dir, "--session", &sid]);
    let out = dir.path().join("scene.glb");
    let printed = run_cli(&[
        "export",
        "--data-dir",
        &data_dir,
        "--session",
        &sid,
        "--out",
        &out.display().to_string(),
    ]);
    let offline = std::fs::read(&out).unwrap();
    let p = glb_provenance(&offline);
    assert_eq!(p["sceneStateHash"], hex::encode(live.state_hash()));
    let log_hash = p["logStateHash"].as_str().unwrap();
    assert!(
        verified.contains(&format!("state {log_hash}")),
        "verify-log: {verified}"
    );
    assert!(printed.contains(log_hash), "{printed}");
    // The chain head is the store's own head after the last entry.
    let store = meshwork_server::store::open(meshwork_server::store::Backend::Redb, &data).unwrap();
    let stored = meshwork_server::store::log::load_session(store.as_ref(), session).unwrap();
    assert_eq!(p["chainHead"], hex::encode(stored.head));
    assert_eq!(p["position"], stored.entries.len());
    drop(store);
    // As .gltf + .bin, at position 1 (the bare cube).
    let gltf_out = dir.path().join("early.gltf");
    run_cli(&[
        "export",
        "--data-dir",
        &data_dir,
        "--session",
        &sid,
        "--at",
        "1",
        "--out",
        &gltf_out.display().to_string(),
    ]);
    let doc = gltf::Gltf::from_slice(&std::fs::read(&gltf_out).unwrap()).unwrap();
    let buffer = doc.document.buffers().next().unwrap();
    assert!(matches!(
        buffer.source(),
        gltf::buffer::Source::Uri("early.bin")
    ));
    let bin = std::fs::read(dir.path().join("early.bin")).unwrap();
    let mesh = doc.document.meshes().next().unwrap();
    let primitive = mesh.primitives().next().unwrap();
    let reader = primitive.reader(|_| Some(&bin));
    assert_eq!(
        reader.read_indices().unwrap().into_u32().count(),
        36,
        "a cube: 12 triangles"
    );
}
