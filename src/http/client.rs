//! The daemon's outbound HTTP client, for model servers (the openai engine), OpenAI-compatible
//! speech servers and x402 facilitators: hyper-util's pooled client over `http://` or
//! `https://`.
//!
//! HTTPS trusts the system's certificate authorities (on Debian, the `ca-certificates`
//! bundle under `/etc/ssl/certs`), read once when the first client is made. `SSL_CERT_FILE`
//! (a PEM bundle) or `SSL_CERT_DIR` replaces them, as for OpenSSL: set it in the service's
//! environment to trust a private authority, e.g. a model server on the LAN with its own
//! certificate. Server names are checked; there is no way to turn that off.
//!
//! Every client carries an [`OutboundPolicy`]: it checks each address before connecting.

use super::outbound::{Guarded, OutboundPolicy, Resolver};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A pooled client for `http://` and `https://` URLs.
pub type Client = hyper_util::client::legacy::Client<
    Guarded<HttpsConnector<HttpConnector<Resolver>>>,
    Full<Bytes>,
>;

/// A client that trusts the system's certificate authorities and connects anywhere (for URLs
/// of the configuration file).
pub fn client(connect_timeout: Duration) -> Client {
    client_trusting(system_tls(), connect_timeout, OutboundPolicy::Any)
}

/// A client that trusts the system's certificate authorities and connects where `policy`
/// permits.
pub fn client_for(policy: OutboundPolicy, connect_timeout: Duration) -> Client {
    client_trusting(system_tls(), connect_timeout, policy)
}

/// A client whose HTTPS uses `tls` (its ALPN list must be empty: HTTP/1.1 is offered).
pub fn client_trusting(
    tls: ClientConfig,
    connect_timeout: Duration,
    policy: OutboundPolicy,
) -> Client {
    let mut http = HttpConnector::new_with_resolver(Resolver {
        policy: policy.clone(),
    });
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // The TLS layer wraps this connector, so it must let https:// through.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let guarded = Guarded {
        inner: connector,
        policy,
    };
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(guarded)
}

/// A TLS client configuration trusting exactly `roots`.
pub fn tls_trusting(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> ClientConfig {
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(roots);
    if ignored > 0 {
        tracing::warn!(
            added,
            ignored,
            "some certificate authorities could not be read"
        );
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// The system's authorities, loaded once per process.
fn system_tls() -> ClientConfig {
    static SYSTEM: OnceLock<ClientConfig> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(cause = %error, "reading the system's certificate authorities");
            }
            if loaded.certs.is_empty() {
                tracing::warn!(
                    "no certificate authorities found (install ca-certificates, or set \
                     SSL_CERT_FILE): outbound https:// will fail"
                );
            }
            tls_trusting(loaded.certs)
        })
        .clone()
}

/// `https` or `http`, and a host: the URLs the client can ask.
pub fn check_url(uri: &hyper::Uri) -> Result<(), String> {
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!("{uri} is not an http:// or https:// URL")),
    }
}

/// The port `uri` names, or its scheme's default.
pub fn port(uri: &hyper::Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}
