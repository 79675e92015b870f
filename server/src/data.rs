//! The data directory: the server's Ed25519 key, its TLS certificate, the admin token's hash
//! and the list of sessions. Created on first start; secrets are written owner-only.
//!
//! Layout (all under the data dir):
//! - `server.key` — hex of the 32-byte Ed25519 seed that signs invites.
//! - `cert.der`, `cert.key.der` — self-signed TLS certificate and its key (bring your own by
//!   replacing both).
//! - `admin-token.sha256` — hex SHA-256 of the admin bearer token (the token is printed once).
//! - `sessions.json` — id and name of every session.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use meshwork_protocol::{Ed25519Signer, SessionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// A session as listed in `sessions.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionMeta {
    /// Hex id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// What the data directory holds, loaded.
#[derive(Debug)]
pub struct DataDir {
    /// Where it is.
    pub root: PathBuf,
    /// Signs invites and (later) checkpoints.
    pub server_key: Ed25519Signer,
    /// TLS certificate, DER.
    pub cert_der: Vec<u8>,
    /// TLS private key, PKCS#8 DER.
    pub cert_key_der: Vec<u8>,
    /// SHA-256 of `cert_der`: what clients pin.
    pub cert_sha256: [u8; 32],
    /// SHA-256 of the admin token.
    pub admin_token_sha256: [u8; 32],
    /// The admin token, only on the start that created it (printed once, never stored).
    pub new_admin_token: Option<String>,
    /// Sessions; the first is the default one.
    pub sessions: Vec<SessionMeta>,
}

/// Fresh random bytes from the operating system.
///
/// # Errors
/// [`Error::Io`] when the OS has no randomness to give.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io(format!("no OS randomness: {e}")))?;
    Ok(b)
}

fn io(path: &Path, e: &std::io::Error) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| io(path, &e))?;
    f.write_all(bytes).map_err(|e| io(path, &e))?;
    f.sync_all().map_err(|e| io(path, &e))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| io(path, &e))
}

/// Parses a hex session id.
///
/// # Errors
/// [`Error::Config`] for anything but 32 hex digits.
pub fn parse_session_id(hex_id: &str) -> Result<SessionId, Error> {
    let bytes = hex::decode(hex_id.trim())
        .map_err(|_| Error::Config(format!("bad session id {hex_id:?}")))?;
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| Error::Config(format!("session id {hex_id:?} is not 16 bytes")))?;
    Ok(SessionId(arr))
}

/// SHA-256 of a token, for constant-size comparison against the stored hash.
#[must_use]
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl DataDir {
    /// Opens the data directory, creating whatever is missing. `hosts` go in a new certificate's
    /// subject alternative names.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`] for unreadable or corrupt files.
    pub fn open_or_init(root: &Path, hosts: &[String]) -> Result<Self, Error> {
        std::fs::create_dir_all(root).map_err(|e| io(root, &e))?;
        let key_path = root.join("server.key");
        if !key_path.exists() {
            let seed: [u8; 32] = random_bytes()?;
            write_secret(&key_path, hex::encode(seed).as_bytes())?;
        }
        let server_key = load_key(&key_path)?;

        let (cert_path, cert_key_path) = (root.join("cert.der"), root.join("cert.key.der"));
        if !cert_path.exists() || !cert_key_path.exists() {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            names.extend(hosts.iter().filter(|h| !h.is_empty()).cloned());
            names.dedup();
            let certified = rcgen::generate_simple_self_signed(names)
                .map_err(|e| Error::Config(format!("cannot create a certificate: {e}")))?;
            write_public(&cert_path, certified.cert.der())?;
            let _ = std::fs::remove_file(&cert_key_path);
            write_secret(&cert_key_path, &certified.signing_key.serialize_der())?;
        }
        let cert_der = std::fs::read(&cert_path).map_err(|e| io(&cert_path, &e))?;
        let cert_key_der = std::fs::read(&cert_key_path).map_err(|e| io(&cert_key_path, &e))?;
        let cert_sha256: [u8; 32] = Sha256::digest(&cert_der).into();

        let token_path = root.join("admin-token.sha256");
        let mut new_admin_token = None;
        if !token_path.exists() {
            let token = format!("mwa_{}", hex::encode(random_bytes::<24>()?));
            write_secret(&token_path, hex::encode(token_sha256(&token)).as_bytes())?;
            new_admin_token = Some(token);
        }
        let token_hex = std::fs::read_to_string(&token_path).map_err(|e| io(&token_path, &e))?;
        let admin_token_sha256: [u8; 32] = hex::decode(token_hex.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Config(format!("{} is corrupt", token_path.display())))?;

        let sessions_path = root.join("sessions.json");
        if !sessions_path.exists() {
            let first = vec![SessionMeta {
                id: hex::encode(random_bytes::<16>()?),
                name: "Default session".into(),
            }];
            write_sessions(&sessions_path, &first)?;
        }
        let sessions = read_sessions(&sessions_path)?;
        Ok(Self {
            root: root.to_path_buf(),
            server_key,
            cert_der,
            cert_key_der,
            cert_sha256,
            admin_token_sha256,
            new_admin_token,
            sessions,
        })
    }

    /// Records a new session.
    ///
    /// # Errors
    /// [`Error::Io`] when the list cannot be written.
    pub fn add_session(&mut self, meta: SessionMeta) -> Result<(), Error> {
        self.sessions.push(meta);
        write_sessions(&self.root.join("sessions.json"), &self.sessions)
    }

    /// The default session (the first one).
    ///
    /// # Errors
    /// [`Error::Config`] when the list is empty or the id corrupt.
    pub fn default_session(&self) -> Result<SessionId, Error> {
        let first = self
            .sessions
            .first()
            .ok_or_else(|| Error::Config("no sessions".into()))?;
        parse_session_id(&first.id)
    }
}

fn load_key(path: &Path) -> Result<Ed25519Signer, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, &e))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Config(format!("{} is not a 32-byte hex key", path.display())))?;
    Ok(Ed25519Signer::from_seed(seed))
}

fn write_sessions(path: &Path, sessions: &[SessionMeta]) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(sessions).map_err(|e| Error::Io(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    write_public(&tmp, &json)?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, &e))
}

fn read_sessions(path: &Path) -> Result<Vec<SessionMeta>, Error> {
    let bytes = std::fs::read(path).map_err(|e| io(path, &e))?;
    let list: Vec<SessionMeta> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    for s in &list {
        parse_session_id(&s.id)?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_everything_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open_or_init(dir.path(), &[]).unwrap();
        let token = first
            .new_admin_token
            .clone()
            .expect("token printed on first start");
        assert_eq!(token_sha256(&token), first.admin_token_sha256);
        let again = DataDir::open_or_init(dir.path(), &[]).unwrap();
        assert!(again.new_admin_token.is_none(), "the token is shown once");
        assert_eq!(
            again.cert_sha256, first.cert_sha256,
            "the certificate is kept"
        );
        assert_eq!(
            again.default_session().unwrap(),
            first.default_session().unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("server.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is owner-only");
        }
    }
}
