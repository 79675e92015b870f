//! Scene and mesh operations: the input as a stream of frames (seeded with the commands' golden
//! fixtures, each a `Submit`); every command of every entry is checked (`Command::validate`) and
//! applied with the server's limits (`Scene::try_apply`), as the session does. Every mesh stays
//! valid, and an encoded scene decodes to the same state hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::FrameReader;
use meshwork_protocol::codec::decode_payload;
use meshwork_protocol::scene::{Geometry, Limits, Scene};
use meshwork_protocol::wire::ClientMsg;

fuzz_target!(|data: &[u8]| {
    let mut scene = Scene::new();
    let mut reader = FrameReader::new();
    if reader.push(data).is_err() {
        return;
    }
    while let Ok(Some(payload)) = reader.next_payload() {
        let Ok(ClientMsg::Submit(submit)) = decode_payload::<ClientMsg>(&payload) else {
            continue;
        };
        for entry in submit.entries.iter().take(64) {
            let Ok(body) = entry.decode_body() else {
                continue;
            };
            if body.command.validate(body.author).is_err() {
                continue;
            }
            if scene
                .try_apply(body.id(), body.author, &body.command, &Limits::DEFAULT)
                .is_ok()
            {
                for entity in scene.entities.values() {
                    if let Geometry::Mesh(m) = &entity.geometry {
                        m.check().expect("an accepted edit leaves a valid mesh");
                    }
                }
            }
        }
    }
    let again = Scene::decode(&scene.encode()).expect("an encoded scene decodes");
    assert_eq!(again.state_hash(), scene.state_hash());
});
