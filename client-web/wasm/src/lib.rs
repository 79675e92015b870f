//! `meshwork-protocol` for JavaScript (wasm-bindgen): key generation from caller-supplied
//! randomness, the client connection (handshake, signing, submitting) and its replica, fed with
//! raw bytes from whatever transport the page uses (WebSocket today). Everything that decides
//! what is true stays in Rust; this is only the boundary.
//!
//! Commands cross the boundary as JSON in serde's shape of `meshwork_protocol::Command`, e.g.
//! `{"Translate":{"entity":4294967297,"delta":[0.1,0,0]}}`.

use meshwork_protocol::client::{ClientConnection, ClientEvent, ClientPhase};
use meshwork_protocol::codec::encode_frame;
use meshwork_protocol::wire::{JoinTicket, ServerMsg};
use meshwork_protocol::{Command, Ed25519Signer, EntityId, FrameReader, Signer as _};
use wasm_bindgen::prelude::*;

fn err(e: impl core::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A connection to one session.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Connection {
    inner: ClientConnection<Ed25519Signer>,
    reader: FrameReader,
    public_key: Vec<u8>,
}

#[wasm_bindgen]
impl Connection {
    /// `seed`: 32 random bytes (`crypto.getRandomValues`), the signing key's secret;
    /// `ticket`: the join ticket text (`mwj1_…`). The `Hello` is queued at once.
    ///
    /// # Errors
    /// A bad seed length or an unreadable ticket.
    #[wasm_bindgen(constructor)]
    pub fn new(seed: &[u8], ticket: &str) -> Result<Self, JsError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| err("the seed must be 32 bytes"))?;
        let ticket = JoinTicket::from_text(ticket).map_err(err)?;
        let signer = Ed25519Signer::from_seed(seed);
        let public_key = signer.public_key().0.to_vec();
        Ok(Self {
            inner: ClientConnection::new(
                signer,
                ticket.invite,
                concat!("meshwork-wasm ", env!("CARGO_PKG_VERSION")),
            ),
            reader: FrameReader::new(),
            public_key,
        })
    }

    /// The public key (32 bytes).
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    /// Everything to send now, as back-to-back frames (empty when nothing is queued).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(msg) = self.inner.poll_transmit() {
            // A message over the frame limit cannot be produced by this API's inputs.
            let _ = encode_frame(&msg, &mut out);
        }
        out
    }

    /// Feeds bytes received from the server (any split). Returns the events as a JSON array
    /// of strings (`"joined"`, `"synced"`, `"resyncing"`, `"closed"`, `"refused: …"`).
    ///
    /// # Errors
    /// A frame that ends the connection (oversized or undecodable).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<String, JsError> {
        self.reader.push(bytes).map_err(err)?;
        let mut events = Vec::new();
        while let Some(msg) = self.reader.next_msg::<ServerMsg>().map_err(err)? {
            let e = match self.inner.handle(&msg) {
                ClientEvent::None => continue,
                ClientEvent::Joined => "joined".to_owned(),
                ClientEvent::Synced => "synced".to_owned(),
                ClientEvent::Resyncing => "resyncing".to_owned(),
                ClientEvent::Closed => "closed".to_owned(),
                ClientEvent::Refused(r) => format!("refused: {}", r.message),
            };
            events.push(e);
        }
        serde_json::to_string(&events).map_err(err)
    }

    /// Joined the session.
    #[must_use]
    pub fn joined(&self) -> bool {
        matches!(self.inner.phase(), ClientPhase::Joined(_))
    }

    /// The author id, once joined.
    #[must_use]
    pub fn author(&self) -> Option<u32> {
        self.inner.author().map(|a| a.0)
    }

    /// The id of this author's `counter`-th entity (as a JS number: exact below 2^53).
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "author ids stay far below 2^21")]
    pub fn entity_id(&self, counter: u32) -> Option<f64> {
        self.inner
            .author()
            .map(|a| EntityId::new(a, counter).0 as f64)
    }

    /// The replica holds a snapshot and is in step.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.inner.replica().is_synced()
    }

    /// Signs and queues a command given as JSON.
    ///
    /// # Errors
    /// JSON that is not a command, or not joined yet.
    pub fn submit_json(&mut self, command: &str) -> Result<(), JsError> {
        let command: Command = serde_json::from_str(command).map_err(err)?;
        self.inner
            .submit(vec![command])
            .map(|_| ())
            .ok_or_else(|| err("not joined yet"))
    }

    /// Hex SHA-256 of the replica's scene (compare with the server's).
    #[must_use]
    pub fn state_hash(&self) -> String {
        self.inner
            .replica()
            .scene()
            .state_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Entities in the replica.
    #[must_use]
    pub fn entity_count(&self) -> usize {
        self.inner.replica().scene().entities.len()
    }

    /// Render data of every entity as JSON: `[{id, world_from_local[16], color[4], positions,
    /// normals, indices}]`.
    ///
    /// # Errors
    /// Never in practice (plain numbers).
    pub fn render_json(&self) -> Result<String, JsError> {
        let items: Vec<serde_json::Value> = self
            .inner
            .replica()
            .scene()
            .render()
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id.0,
                    "world_from_local": e.world_from_local,
                    "color": e.color,
                    "positions": e.mesh.positions,
                    "normals": e.mesh.normals,
                    "indices": e.mesh.indices,
                })
            })
            .collect();
        serde_json::to_string(&items).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json() {
        let c: Command =
            serde_json::from_str(r#"{"Translate":{"entity":4294967297,"delta":[0.5,0,0]}}"#)
                .unwrap();
        assert_eq!(
            c,
            Command::Translate {
                entity: EntityId(4_294_967_297),
                delta: glam::Vec3::new(0.5, 0.0, 0.0)
            }
        );
    }
}
