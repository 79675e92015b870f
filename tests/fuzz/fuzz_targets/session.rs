//! The session state machine fed arbitrary input sequences (one byte an input: the low four
//! bits its kind, the high four the client; a payload or datagram follows as a two-byte length
//! and its bytes): connections opening and going,
//! payloads and datagrams of any bytes from any of 16 clients, submits handed on as verified
//! (kind 8), time passing, persistence
//! acknowledgements in order, slow clients, revoked invites. The log's window is tiny, so what
//! it accepts is soon let go and `FetchLog` reads history back from the entries persisted here.
//! It may refuse and close; it must never panic, and every output it makes is carried out as
//! the server would.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::{Ed25519Signer, SessionId};
use meshwork_session::{ClientId, Config, Input, Output, Session};

fuzz_target!(|data: &[u8]| {
    let mut config = Config::signed_by(
        SessionId([7; 16]),
        Arc::new(Ed25519Signer::from_seed([9; 32])),
    );
    config.log_window = 2;
    let mut now = 1_000_000_u64;
    let mut session = Session::new(config, [3; 32], now);
    let mut batches = std::collections::VecDeque::new();
    // Every entry persisted, in position order (position 1 first).
    let mut stored: Vec<meshwork_protocol::SignedEntry> = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let client = ClientId(u64::from(op >> 4));
        let input = match op & 0x0f {
            0 => Input::Connected { client },
            kind @ (1 | 2 | 8) => {
                // Two bytes of length (little-endian), then that many bytes.
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes(*len));
                let (bytes, tail) = tail.split_at(len.min(tail.len()));
                rest = tail;
                let bytes = bytes.to_vec();
                if kind == 8 {
                    // What the glue's signature check hands on: a decoded Submit and the key
                    // it claims every entry verified under (here any key at all).
                    match meshwork_protocol::codec::decode_payload(&bytes) {
                        Ok(meshwork_protocol::wire::ClientMsg::Submit(s)) => Input::VerifiedSubmit {
                            client,
                            entries: s.entries,
                            signed_by: meshwork_protocol::PublicKey([op; 32]),
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
});
