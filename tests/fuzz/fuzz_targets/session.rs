//! The session state machine fed arbitrary input sequences (one byte an input: the low four
//! bits its kind, the high four the client; a payload or datagram follows as a two-byte length
//! and its bytes): connections opening and going,
//! payloads and datagrams of any bytes from any of 16 clients, submits handed on as verified
//! (kind 8), time passing, persistence
//! acknowledgements in order, slow clients, revoked invites. Two editors join first with a real
//! invite and handshake, so commands they sign (kind 9: a command decoded from the input's
//! bytes, or one of a few simple ones when they do not decode) are accepted and build a history.
//! The log's window is tiny, so what it accepts is soon let go and `FetchLog` reads history back
//! from the entries persisted here.
//! It may refuse and close; it must never panic, and every output it makes is carried out as
//! the server would. At the end, a restart from every persisted entry and one from a base
//! halfway (the store after a rotation) must rebuild the same scene.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::client::ClientConnection;
use meshwork_protocol::codec::decode_frame;
use meshwork_protocol::command::{Command, Primitive, Transform};
use meshwork_protocol::wire::{ClientMsg, Invite, InviteBody, ServerMsg, Submit};
use meshwork_protocol::{Domain, Ed25519Signer, EntityId, Role, SessionId};
use meshwork_session::{ClientId, Config, Input, Output, Session, SessionBase};

const SESSION: SessionId = SessionId([7; 16]);

fn config() -> Config {
    let mut c = Config::signed_by(SESSION, Arc::new(Ed25519Signer::from_seed([9; 32])));
    c.log_window = 2;
    c
}

/// The client id of pre-joined editor `i`.
fn editor_client(i: usize) -> ClientId {
    ClientId(100 + i as u64)
}

/// Two editors joined through the real handshake (invite, challenge, proof, welcome, snapshot).
fn join_editors(session: &mut Session, now: u64) -> Vec<ClientConnection<Ed25519Signer>> {
    let server = Ed25519Signer::from_seed([9; 32]);
    let mut editors = Vec::new();
    for i in 0..2u8 {
        let body = InviteBody {
            domain: Domain::Invite,
            session: SESSION,
            role: Role::Editor,
            expires_at_ms: now + 3_600_000,
            invite_id: [0xe0 + i; 16],
        };
        let invite = Invite::mint(&body, &server).expect("a valid invite");
        let mut conn = ClientConnection::new(Ed25519Signer::from_seed([0x40 + i; 32]), invite, "fuzz");
        let client = editor_client(usize::from(i));
        session.handle_input(now, Input::Connected { client });
        for _ in 0..16 {
            while let Some(msg) = conn.poll_transmit() {
                let bytes = postcard::to_allocvec(&msg).expect("a message encodes");
                session.handle_input(now, Input::Payload { client, bytes });
            }
            while let Some(out) = session.poll_output() {
                match out {
                    Output::Send { client: to, frame, .. } if to == client => {
                        if let Ok(Some((msg, _))) = decode_frame::<ServerMsg>(&frame) {
                            conn.handle(&msg);
                        }
                    }
                    Output::Persist { batch, .. } => {
                        session.handle_input(now, Input::PersistAck { batch });
                    }
                    _ => {}
                }
            }
            if conn.replica().is_synced() {
                break;
            }
        }
        editors.push(conn);
    }
    editors
}

/// A command from the input's bytes, or one of a few simple ones on the editor's own cube.
fn command_from(bytes: &[u8], editor: &ClientConnection<Ed25519Signer>) -> Option<Command> {
    if let Ok(c) = postcard::from_bytes::<Command>(bytes) {
        return Some(c);
    }
    let author = editor.author()?;
    let entity = EntityId::new(author, 1);
    Some(match bytes.first().copied().unwrap_or(0) % 3 {
        0 => Command::Spawn {
            entity,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        },
        1 => Command::SetName {
            entity,
            name: format!("n{}", bytes.len()),
        },
        _ => Command::Despawn { entity },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut now = 1_000_000_u64;
    let mut session = Session::new(config(), [3; 32], now);
    let mut editors = join_editors(&mut session, now);
    let mut batches = std::collections::VecDeque::new();
    // Every entry persisted, in position order (position 1 first).
    let mut stored: Vec<meshwork_protocol::SignedEntry> = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let client = ClientId(u64::from(op >> 4));
        let input = match op & 0x0f {
            0 => Input::Connected { client },
            kind @ (1 | 2 | 8 | 9) => {
                // Two bytes of length (little-endian), then that many bytes.
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes(*len));
                let (bytes, tail) = tail.split_at(len.min(tail.len()));
                rest = tail;
                let bytes = bytes.to_vec();
                if kind == 9 {
                    // A command signed by a joined editor, as its client would send it.
                    let i = usize::from(op >> 4) % editors.len();
                    let Some(entries) =
                        command_from(&bytes, &editors[i]).and_then(|c| editors[i].sign(vec![c]))
                    else {
                        continue;
                    };
                    let msg = ClientMsg::Submit(Submit { entries });
                    let bytes = postcard::to_allocvec(&msg).expect("a message encodes");
                    Input::Payload {
                        client: editor_client(i),
                        bytes,
                    }
                } else if kind == 8 {
                    // What the glue's signature check hands on: a decoded Submit, the key it
                    // claims every entry verified under (here any key at all) and the session
                    // it checked them for (this one, or another).
                    match meshwork_protocol::codec::decode_payload(&bytes) {
                        Ok(meshwork_protocol::wire::ClientMsg::Submit(s)) => Input::VerifiedSubmit {
                            client,
                            entries: s.entries,
                            signed_by: meshwork_protocol::PublicKey([op; 32]),
                            session: if op % 2 == 0 { SESSION } else { SessionId([op; 16]) },
                        },
                        _ => Input::Payload { client, bytes },
                    }
                } else if kind == 1 {
                    Input::Payload { client, bytes }
                } else {
                    Input::Datagram { client, bytes }
                }
            }
            3 => Input::Disconnected { client },
            4 => Input::Backpressure { client },
            5 => match batches.pop_front() {
                Some(batch) => Input::PersistAck { batch },
                None => continue,
            },
            6 => {
                now += 1_000;
                Input::Tick
            }
            7 => Input::RevokeInvite { invite: [op; 16] },
            _ => {
                now += u64::from(op);
                Input::Tick
            }
        };
        session.handle_input(now, input);
        let mut reads = Vec::new();
        loop {
            while let Some(out) = session.poll_output() {
                match out {
                    Output::Persist { batch, entries, .. } => {
                        batches.push_back(batch);
                        stored.extend(entries);
                    }
                    Output::ReadStored {
                        client,
                        request,
                        ranges,
                    } => {
                        let entries = ranges
                            .into_iter()
                            .flatten()
                            .filter_map(|p| {
                                stored
                                    .get(usize::try_from(p.checked_sub(1)?).ok()?)
                                    .cloned()
                            })
                            .collect();
                        reads.push(Input::Stored {
                            client,
                            request,
                            entries,
                        });
                    }
                    _ => {}
                }
            }
            if reads.is_empty() {
                break;
            }
            for read in reads.drain(..) {
                session.handle_input(now, read);
            }
        }
    }
    let _ = session.snapshot();
    let _ = session.members();
    // A restart from a base halfway through what was persisted (its history rotated into an
    // archive) rebuilds the scene a restart from every entry rebuilds.
    let authors = session.authors();
    let restart_config = config;
    let Ok((full, _)) = Session::restore(restart_config(), [3; 32], now, &authors, &[], None, stored.clone())
    else {
        return;
    };
    let half = stored.len() / 2;
    let mut first = Session::restoring(restart_config(), [3; 32], now, &authors, &[], None);
    for e in &stored[..half] {
        first.push(e.clone()).expect("a prefix of a log that replays replays");
    }
    let base = first.base().expect("a prefix of a log that replays replays");
    let base = SessionBase::decode(&base.encode()).expect("a base decodes");
    let mut rest = Session::restoring_from(restart_config(), [3; 32], now, &authors, &[], base);
    for e in &stored[half..] {
        rest.push(e.clone()).expect("the rest replays from the base");
    }
    let (restarted, _) = rest.finish().expect("the rest replays from the base");
    assert_eq!(
        restarted.scene().state_hash(),
        full.scene().state_hash(),
        "a restart from a base rebuilds the same scene"
    );
});
