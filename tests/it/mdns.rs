//! mDNS, only inside a network namespace this test creates (`ip netns add`, a veth pair with
//! both ends inside it): the daemon runs there (`ip netns exec`) listening on the veth's
//! address, and a browser thread moved into the same namespace sees `_https._tcp` with the
//! TXT record. Nothing here multicasts on an interface of the machine; without `ip netns`
//! (root and iproute2) the test fails rather than fall back to a real interface.

use crate::supervised::*;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use rustix::process::Signal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

const ADDRESS: &str = "10.213.0.1";

/// A network namespace with `lo` and a veth pair inside; deleted (with the pair) on drop.
struct Namespace {
    name: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (package iproute2; tests/run.sh installs it)");
    assert!(
        output.status.success(),
        "ip {}: {} (these tests need root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Namespace {
    fn create(tag: &str) -> Namespace {
        let name = format!("outpost-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        let n = namespace.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", "op0", "type", "veth", "peer", "name", "op1",
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{ADDRESS}/24"),
            "dev",
            "op0",
        ]);
        ip(&["-n", n, "link", "set", "op0", "up"]);
        ip(&["-n", n, "link", "set", "op1", "up"]);
        namespace
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// What a browser inside `namespace` resolves for `_https._tcp` within `limit`.
struct Seen {
    port: u16,
    addresses: Vec<IpAddr>,
    txt: HashMap<String, String>,
}

fn browse_inside(namespace: &str, limit: Duration) -> Option<Seen> {
    let path = format!("/run/netns/{namespace}");
    std::thread::spawn(move || {
        let handle = std::fs::File::open(&path).expect("opening the namespace");
        rustix::thread::move_into_link_name_space(
            handle.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("entering the namespace");
        // The responder's thread starts from this one, so its sockets live in the namespace.
        let browser = ServiceDaemon::new().unwrap();
        let events = browser.browse("_https._tcp.local.").unwrap();
        let deadline = std::time::Instant::now() + limit;
        let mut seen = None;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match events.recv_timeout(left) {
                Ok(ServiceEvent::ServiceResolved(service))
                    if service.get_fullname().starts_with("Outpost on") =>
                {
                    seen = Some(Seen {
                        port: service.get_port(),
                        addresses: service
                            .get_addresses()
                            .iter()
                            .map(|a| a.to_ip_addr())
                            .collect(),
                        txt: service.get_properties().clone().into_property_map_str(),
                    });
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if let Ok(done) = browser.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
        seen
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn the_api_is_advertised_inside_the_tests_own_network_namespace() {
    let namespace = Namespace::create("mdns");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{ADDRESS}:8443\"]\nmdns = true\nshutdown_timeout_s = 5\n\
             [tls]\nmode = \"auto\"\n[store]\ndata_dir = {data:?}\n"
        ),
    )
    .unwrap();
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("outpost.log");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &namespace.name])
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(&config);
    clean_env(&mut command);
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = Supervised::spawn(command, &log);
    notify.until("READY=1", Duration::from_secs(30)).await;

    let name = namespace.name.clone();
    let seen = tokio::task::spawn_blocking(move || browse_inside(&name, Duration::from_secs(15)))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no advertisement seen; log:\n{}", daemon.log()));
    assert_eq!(seen.port, 8443);
    assert!(
        seen.addresses.contains(&ADDRESS.parse().unwrap()),
        "{:?}",
        seen.addresses
    );
    assert!(
        seen.addresses.iter().all(|a| !a.is_loopback()),
        "{:?}",
        seen.addresses
    );
    assert_eq!(seen.txt.get("path").map(String::as_str), Some("/api"));
    assert_eq!(
        seen.txt.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let cert = rustls::pki_types::pem::PemObject::from_pem_file(data.join("tls/cert.pem"))
        .map(|der: rustls::pki_types::CertificateDer| outpost::tls::fingerprint(&der))
        .unwrap();
    assert_eq!(seen.txt.get("fingerprint"), Some(&cert));

    daemon.signal(Signal::TERM);
    assert!(
        daemon.exited(Duration::from_secs(15)).await,
        "{}",
        daemon.log()
    );
}
