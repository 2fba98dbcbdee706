//! mDNS (DNS-SD) advertisement, so devices on the LAN find the box: `_https._tcp` (or
//! `_http._tcp` when plain) with a TXT record naming the API path, the version and the
//! certificate fingerprint. Only on the interfaces of non-loopback listen addresses, never
//! when the daemon listens on loopback only, and only when `server.mdns = true`.

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where an advertisement goes: the port and the interfaces it is announced on.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    pub port: u16,
    /// The interfaces, named by one of their addresses; empty means every non-loopback IPv4
    /// interface (the daemon listens on `0.0.0.0`) or, with `ipv6`, every interface.
    pub addresses: Vec<IpAddr>,
    /// True when the daemon listens on `[::]` (and so on every interface of both families).
    pub ipv6: bool,
}

/// Where to advertise for these bound addresses, or None when none is reachable from the
/// network (loopback only).
pub fn scope(addrs: &[SocketAddr]) -> Option<Scope> {
    let reachable: Vec<&SocketAddr> = addrs.iter().filter(|a| !a.ip().is_loopback()).collect();
    let first = reachable.first()?;
    let unspecified: Vec<&&SocketAddr> = reachable
        .iter()
        .filter(|a| a.ip().is_unspecified())
        .collect();
    if let Some(any) = unspecified.first() {
        return Some(Scope {
            port: any.port(),
            addresses: Vec::new(),
            ipv6: unspecified.iter().any(|a| a.is_ipv6()),
        });
    }
    let mut addresses: Vec<IpAddr> = reachable.iter().map(|a| a.ip()).collect();
    addresses.dedup();
    Some(Scope {
        port: first.port(),
        addresses,
        ipv6: false,
    })
}

/// The TXT properties: API path, version and, with TLS, the certificate's SHA-256.
pub fn properties(fingerprint: Option<&str>) -> Vec<(String, String)> {
    let mut txt = vec![
        ("txtvers".to_string(), "1".to_string()),
        ("path".to_string(), "/api".to_string()),
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ];
    if let Some(fingerprint) = fingerprint {
        txt.push(("fingerprint".to_string(), fingerprint.to_string()));
    }
    txt
}

/// Starts the advertisement `config` asks for, if any; a failure is logged, not fatal.
pub fn advertise(
    config: &crate::config::Config,
    addrs: &[SocketAddr],
    certificate: Option<&crate::tls::Certificate>,
) -> Option<Advertisement> {
    if !config.mdns {
        return None;
    }
    let Some(scope) = scope(addrs) else {
        tracing::info!("mDNS: listening on loopback only, so nothing is advertised");
        return None;
    };
    let fingerprint = certificate.map(|c| c.fingerprint());
    match Advertisement::start(scope, fingerprint.as_deref()) {
        Ok(advertisement) => Some(advertisement),
        Err(err) => {
            tracing::warn!(cause = %err, "could not advertise over mDNS");
            None
        }
    }
}

/// What can go wrong advertising.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct Error(String);

impl From<mdns_sd::Error> for Error {
    fn from(err: mdns_sd::Error) -> Error {
        Error(err.to_string())
    }
}

/// A running advertisement; [`Advertisement::stop`] sends the goodbye.
pub struct Advertisement {
    daemon: ServiceDaemon,
    scope: Scope,
    tls: bool,
    fullname: String,
}

impl Advertisement {
    /// Starts advertising on `scope`'s interfaces.
    pub fn start(scope: Scope, fingerprint: Option<&str>) -> Result<Advertisement, Error> {
        let daemon = ServiceDaemon::new()?;
        daemon.disable_interface(IfKind::All)?;
        let interfaces = interfaces(&scope);
        daemon.enable_interface(interfaces.clone())?;
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        let mut advertisement = Advertisement {
            daemon,
            tls: fingerprint.is_some(),
            fullname: String::new(),
            scope,
        };
        advertisement.register(fingerprint)?;
        Ok(advertisement)
    }

    /// Announces the new certificate fingerprint (after a reload).
    pub fn update(&mut self, fingerprint: Option<&str>) -> Result<(), Error> {
        self.register(fingerprint)
    }

    /// The announced instance, e.g. `Outpost on box._https._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    fn register(&mut self, fingerprint: Option<&str>) -> Result<(), Error> {
        let host = crate::hostname::hostname().unwrap_or_else(|| "outpost".to_string());
        let service = if self.tls { "_https" } else { "_http" };
        let addresses: Vec<IpAddr> = self.scope.addresses.clone();
        let mut info = ServiceInfo::new(
            &format!("{service}._tcp.local."),
            &format!("Outpost on {host}"),
            &format!("{host}.local."),
            &addresses[..],
            self.scope.port,
            &properties(fingerprint)[..],
        )?;
        if addresses.is_empty() {
            info = info.enable_addr_auto();
        }
        info.set_interfaces(interfaces(&self.scope));
        self.fullname = info.get_fullname().to_string();
        self.daemon.register(info)?;
        tracing::info!(service = %self.fullname, port = self.scope.port, "advertised over mDNS");
        Ok(())
    }

    /// Withdraws the advertisement (a goodbye packet) and stops the responder.
    pub async fn stop(self) {
        let Advertisement {
            daemon, fullname, ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(done) = daemon.unregister(&fullname) {
                let _ = done.recv_timeout(Duration::from_secs(2));
            }
            if let Ok(done) = daemon.shutdown() {
                let _ = done.recv_timeout(Duration::from_secs(2));
            }
        })
        .await;
    }
}

fn interfaces(scope: &Scope) -> Vec<IfKind> {
    if !scope.addresses.is_empty() {
        return scope.addresses.iter().map(|ip| IfKind::Addr(*ip)).collect();
    }
    if scope.ipv6 {
        vec![IfKind::All]
    } else {
        vec![IfKind::IPv4]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addrs: &[&str], expected: Option<(u16, &[&str], bool)>) {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let expected = expected.map(|(port, ips, ipv6)| Scope {
            port,
            addresses: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ipv6,
        });
        assert_eq!(scope(&addrs), expected, "{addrs:?}");
    }

    #[test]
    fn advertised_only_beyond_loopback() {
        check(&["127.0.0.1:8000"], None);
        check(&["127.0.0.1:8000", "[::1]:8000"], None);
        check(&["0.0.0.0:8443"], Some((8443, &[], false)));
        check(&["[::]:8443"], Some((8443, &[], true)));
        check(
            &["127.0.0.1:8000", "10.1.2.3:8443"],
            Some((8443, &["10.1.2.3"], false)),
        );
        check(
            &["10.1.2.3:8443", "10.9.9.9:8443"],
            Some((8443, &["10.1.2.3", "10.9.9.9"], false)),
        );
    }

    #[test]
    fn txt_names_path_version_and_fingerprint() {
        let txt = properties(Some("AB:CD"));
        assert!(txt.contains(&("path".into(), "/api".into())));
        assert!(txt.contains(&("fingerprint".into(), "AB:CD".into())));
        assert!(txt.iter().any(|(k, _)| k == "version"));
        assert!(!properties(None).iter().any(|(k, _)| k == "fingerprint"));
    }
}
