//! The QUIC client endpoint every native Meshwork client uses (the Quest app, the load
//! generator, the test kit): TLS 1.3 with ALPN `meshwork/1`, accepting exactly the certificate
//! whose SHA-256 the join ticket carries. The server's certificate is self-signed by default, so
//! there is no CA to trust; the fingerprint arrives with the invite instead. Handshake
//! signatures are still verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// ALPN protocol id the server speaks.
pub const ALPN: &[u8] = b"meshwork/1";

/// Keep-alive interval: well inside the server's idle timeout and common NAT binding timeouts.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A client endpoint for `server` that accepts only the certificate with `cert_sha256`. Bound
/// to loopback when the server is (tests never touch other interfaces), else to the wildcard.
///
/// # Errors
/// A sentence when TLS or the socket cannot be set up.
pub fn endpoint(server: SocketAddr, cert_sha256: [u8; 32]) -> Result<quinn::Endpoint, String> {
    endpoint_with(server, cert_sha256, |_| {})
}

/// As [`endpoint`], with the transport settings adjusted by `tune` (tests: small receive
/// windows, to make a client that stops reading push back on the server at once).
///
/// # Errors
/// As [`endpoint`].
pub fn endpoint_with(
    server: SocketAddr,
    cert_sha256: [u8; 32],
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> Result<quinn::Endpoint, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            sha256: cert_sha256,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    tune(&mut transport);
    config.transport_config(Arc::new(transport));
    let ip: IpAddr = match (server.is_ipv4(), server.ip().is_loopback()) {
        (true, true) => Ipv4Addr::LOCALHOST.into(),
        (false, true) => Ipv6Addr::LOCALHOST.into(),
        (true, false) => Ipv4Addr::UNSPECIFIED.into(),
        (false, false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Accepts exactly the certificate whose SHA-256 the ticket names.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one the invite names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
