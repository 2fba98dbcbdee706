//! Outbound HTTPS: the openai engine and the x402 facilitator client reach their servers
//! over real TLS. A test certificate authority signs a certificate for 127.0.0.1; a TLS
//! front (rustls) holding it sits before the plain fake model server and facilitator stub.
//! The daemon, a separate process, trusts that authority through `SSL_CERT_FILE` and
//! completes a chat turn and a paid turn through it; a daemon that trusts only the system's
//! authorities refuses the same server, and nothing reaches it.

use crate::engines::{fake_openai, openai_agent};
use crate::paid::payer::{Payment, PAYER_KEY, PAY_TO};
use crate::paid::stub::{Mode, Stub};
use crate::restart::Process;
use crate::support::*;
use hyper::Method;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority made for one test, and a server certificate it signed.
struct Authority {
    /// The authority's certificate, as PEM, for `SSL_CERT_FILE`.
    pem_file: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Authority {
    fn new(dir: &Path) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Outpost test authority");
        let authority = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &authority)
            .unwrap();
        let pem_file = dir.join("authority.pem");
        std::fs::write(&pem_file, authority.pem()).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![server.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Authority {
            pem_file,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// A TLS front on 127.0.0.1 for the plain server at `upstream`: its `https://` origin,
    /// and a count of the handshakes it completed.
    async fn front(&self, upstream: SocketAddr) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("https://{}", listener.local_addr().unwrap());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (acceptor, counted) = (self.acceptor.clone(), handshakes.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut plain = TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        (origin, handshakes)
    }
}

/// The address in a plain `http://host:port…` URL.
fn address(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_daemon_trusting_the_authority_in_ssl_cert_file_chats_and_settles_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path());
    let (model_url, mut seen) = fake_openai().await;
    let (model, model_handshakes) = authority.front(address(&model_url)).await;
    let stub = Stub::start(Mode::Accept).await;
    let (facilitator, facilitator_handshakes) = authority.front(address(&stub.url)).await;

    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.llm]\n\
             engine = {{ kind = \"openai\", base_url = \"{model}/v1\", model = \"tiny-model\" }}\n\
             [agents.helper]\n\
             engine = {{ kind = \"echo\" }}\n\
             [agents.helper.paid]\n\
             price = \"10000\"\n\
             network = \"eip155:84532\"\n\
             pay_to = \"{PAY_TO}\"\n\
             facilitator_url = \"{facilitator}\"\n"
        ),
    )
    .unwrap();
    let daemon = Process::start_with_env(
        &dir.path().join("data"),
        &config,
        &[("SSL_CERT_FILE", authority.pem_file.as_os_str())],
    )
    .await;
    let token = daemon.admin_token().await;

    // A chat turn with the model server behind TLS.
    let request = build(
        Method::POST,
        "/api/agents/llm/chat",
        Some(&token),
        Some(json!({"message": "hello over tls"})),
        &[("accept", "application/json")],
    );
    let reply = send(daemon.addr, None, false, request).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.json()["response"],
        "hello over tls ",
        "{}",
        reply.json()
    );
    assert_eq!(seen.recv().await.unwrap()["model"], "tiny-model");
    assert!(model_handshakes.load(Ordering::SeqCst) >= 1);

    // A paid turn settled by the facilitator behind TLS.
    let info = daemon
        .call(Method::GET, "/api/paid/helper/info", None, None)
        .await;
    assert_eq!(info.status, 200);
    let requirement: Value = info.json()["accepts"][0].clone();
    let payment = Payment::new(PAYER_KEY, &requirement);
    let request = build(
        Method::POST,
        "/api/paid/helper/chat",
        None,
        Some(json!({"message": "paid over tls"})),
        &[("payment-signature", &payment.v2())],
    );
    let paid = send(daemon.addr, None, false, request).await;
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
    assert!(paid.header("payment-response").is_some());
    assert_eq!(stub.settles().len(), 1);
    assert!(facilitator_handshakes.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_server_whose_authority_is_not_trusted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path());
    let (model_url, mut seen) = fake_openai().await;
    let (model, handshakes) = authority.front(address(&model_url)).await;
    // This daemon trusts the system's authorities only.
    let agent = openai_agent("llm", format!("{model}/v1"), "tiny-model");
    let server = TestServer::with(|c| c.agents = vec![agent]).await;
    let token = server.admin().await;
    let reply = server
        .chat_json("llm", &token, json!({"message": "hello?"}))
        .await;
    reply.assert_error(503, "engine_unavailable");
    let execution_id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let execution = server
        .get(
            &format!("/api/agents/llm/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{execution}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    assert!(seen.try_recv().is_err(), "nothing reached the model server");
}
