//! How the outbound client connects: hyper-util's pooled client over `http://` or
//! `https://`, behind the [`OutboundPolicy`] checks of `policy.rs` (the resolver checks every
//! address a name resolves to, the connector every address literal).
//!
//! HTTPS trusts the system's certificate authorities (on Debian, the `ca-certificates`
//! bundle under `/etc/ssl/certs`), read once when the first client is made. `SSL_CERT_FILE`
//! (a PEM bundle) or `SSL_CERT_DIR` replaces them, as for OpenSSL: set it in the service's
//! environment to trust a private authority, e.g. a model server on the LAN with its own
//! certificate. Server names are checked; there is no way to turn that off.

use super::policy::{Guarded, OutboundPolicy, Resolver};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A connection pool for `http://` and `https://` URLs.
pub type Pool = hyper_util::client::legacy::Client<
    Guarded<HttpsConnector<HttpConnector<Resolver>>>,
    Full<Bytes>,
>;

/// A pool that trusts the system's certificate authorities and connects where `policy`
/// permits.
pub fn pool(policy: OutboundPolicy, connect_timeout: Duration) -> Pool {
    pool_trusting(system_tls(), connect_timeout, policy)
}

/// A pool whose HTTPS uses `tls` (its ALPN list must be empty: HTTP/1.1 is offered).
fn pool_trusting(tls: ClientConfig, connect_timeout: Duration, policy: OutboundPolicy) -> Pool {
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
fn tls_trusting(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> ClientConfig {
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
