//! Under a service manager: the notify protocol (READY once listening, WATCHDOG pings,
//! RELOADING/READY around SIGHUP, STOPPING), reloads of the certificate and a refused broken
//! configuration, and socket activation with an inherited listening socket.

use crate::supervised::*;
use crate::support::*;
use rustix::process::Signal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

fn plain_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("outpost.toml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nshutdown_timeout_s = 5\n[store]\ndata_dir = {data:?}\n"
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn ready_only_once_listening_then_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = plain_config(dir.path(), port);
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("outpost.log");
    let mut command = serve_command(&config, &notify, &log);
    command.env("WATCHDOG_USEC", "200000");
    let mut daemon = Supervised::spawn(command, &log);

    let before = notify.until("READY=1", START).await;
    assert!(
        !before.iter().any(|m| m.contains("WATCHDOG=1")),
        "no watchdog ping before READY: {before:?}"
    );
    // READY means the listener is bound and the store is open: this answers at once.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/healthz", None).await.status, 200);
    assert_eq!(get(addr, "/readyz", None).await.status, 200);

    // WATCHDOG_USEC = 200 ms: a ping every 100 ms.
    notify.until("WATCHDOG=1", Duration::from_secs(2)).await;
    notify.until("WATCHDOG=1", Duration::from_secs(2)).await;

    daemon.signal(Signal::TERM);
    notify.until("STOPPING=1", Duration::from_secs(10)).await;
    assert!(
        daemon.exited(Duration::from_secs(15)).await,
        "{}",
        daemon.log()
    );
}

/// A self-signed certificate for localhost, written as PEM files; returns its fingerprint.
fn write_certificate(cert: &Path, key: &Path) -> (String, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(cert, made.cert.pem()).unwrap();
    std::fs::write(key, made.signing_key.serialize_pem()).unwrap();
    let der = made.cert.der().to_vec();
    let fingerprint =
        outpost::tls::fingerprint(&rustls::pki_types::CertificateDer::from(der.clone()));
    (fingerprint, der)
}

/// The fingerprint of the certificate a TLS handshake with `addr` presents.
async fn served_fingerprint(addr: SocketAddr, trusted: &[Vec<u8>]) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    outpost::tls::fingerprint(&chain[0])
}

fn tls_config(dir: &Path, port: u16, agent: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nshutdown_timeout_s = 5\n\
         [tls]\nmode = \"files\"\ncert = {:?}\nkey = {:?}\n\
         [store]\ndata_dir = {:?}\n[agents.{agent}]\n",
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("data"),
    )
}

#[tokio::test]
async fn sighup_serves_a_replaced_certificate_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first, first_der) = write_certificate(&cert, &key);
    let port = free_port();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, tls_config(dir.path(), port, "alpha")).unwrap();
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("outpost.log");
    let daemon = Supervised::spawn(serve_command(&config, &notify, &log), &log);
    notify.until("READY=1", START).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // A new certificate and a changed agent list, then SIGHUP.
    let (second, second_der) = write_certificate(&cert, &key);
    let trusted = [first_der, second_der];
    assert_eq!(served_fingerprint(addr, &trusted).await, first);
    std::fs::write(&config, tls_config(dir.path(), port, "beta")).unwrap();
    daemon.signal(Signal::HUP);
    let reload = notify.until("READY=1", Duration::from_secs(10)).await;
    assert!(reload[0].lines().any(|l| l == "RELOADING=1"), "{reload:?}");
    assert_eq!(served_fingerprint(addr, &trusted).await, second);
    let log_text = daemon.log();
    assert!(log_text.contains("reloaded"), "{log_text}");
    assert!(log_text.contains(&second), "the new fingerprint is logged");

    // A broken file: refused, logged, and the daemon serves on as before.
    std::fs::write(&config, "[server]\nlisen = [\"127.0.0.1:1\"]\n").unwrap();
    daemon.signal(Signal::HUP);
    notify.until("READY=1", Duration::from_secs(10)).await;
    assert!(daemon.log().contains("reload refused"), "{}", daemon.log());
    assert!(daemon.log().contains("lisen"), "the bad key is named");
    assert_eq!(served_fingerprint(addr, &trusted).await, second);

    // A certificate that does not parse: refused too, the served one stays.
    std::fs::write(&config, tls_config(dir.path(), port, "beta")).unwrap();
    std::fs::write(&cert, "not a certificate").unwrap();
    daemon.signal(Signal::HUP);
    notify.until("READY=1", Duration::from_secs(10)).await;
    assert_eq!(daemon.log().matches("reload refused").count(), 2);
    assert_eq!(served_fingerprint(addr, &trusted).await, second);
}

#[tokio::test]
async fn socket_activation_serves_the_inherited_socket_instead_of_binding() {
    let activate = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-socket-activate (package systemd; tests/run.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let (configured, inherited) = (free_port(), free_port());
    let config = plain_config(dir.path(), configured);
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("outpost.log");
    // systemd-socket-activate binds the socket, and on the first connection starts the
    // daemon with it as fd 3 (LISTEN_FDS=1, LISTEN_PID = the daemon's pid).
    let mut command = Command::new(activate);
    command
        .args(["--listen", &format!("127.0.0.1:{inherited}")])
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
        .arg(format!("--setenv=OUTPOST_ADMIN_PASSWORD={ADMIN_PASSWORD}"))
        .arg("--setenv=OUTPOST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(&config);
    clean_env(&mut command);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _daemon = Supervised::spawn(command, &log);
    let addr: SocketAddr = format!("127.0.0.1:{inherited}").parse().unwrap();
    // The listening socket exists before the daemon does; the first request starts it.
    let reply = eventually(START, || async {
        tokio::net::TcpStream::connect(addr).await.ok()?;
        Some(get(addr, "/healthz", None).await)
    })
    .await;
    assert_eq!(reply.status, 200);
    notify.until("READY=1", START).await;
    let token = {
        let login = send(
            addr,
            None,
            false,
            build(
                hyper::Method::POST,
                "/api/token",
                None,
                Some(serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
                &[],
            ),
        )
        .await;
        login.json()["access_token"].as_str().unwrap().to_string()
    };
    assert_eq!(get(addr, "/api/agents", Some(&token)).await.status, 200);
    let configured: SocketAddr = format!("127.0.0.1:{configured}").parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(configured).await.is_err(),
        "server.listen is not bound when a socket is inherited"
    );
}
