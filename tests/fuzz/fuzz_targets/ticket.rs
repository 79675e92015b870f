//! Join tickets and invites as pasted or sent: text parsing, and an invite's checks against a
//! server key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::wire::{Invite, JoinTicket};
use meshwork_protocol::{Ed25519Signer, SessionId, Signer};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = JoinTicket::from_text(text) {
            let again = JoinTicket::from_text(&ticket.to_text()).expect("a ticket round-trips");
            assert_eq!(again.to_text(), ticket.to_text());
        }
    }
    if let Ok(invite) = postcard::from_bytes::<Invite>(data) {
        let key = Ed25519Signer::from_seed([9; 32]).public_key();
        let _ = invite.verify(&key, SessionId([7; 16]), 0);
        let _ = invite.claimed_session();
        let _ = invite.claimed_body();
    }
});
