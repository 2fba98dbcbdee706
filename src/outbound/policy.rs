//! Where outbound connections may go. Agents made by users (not admins) reach public
//! addresses only, unless `[outbound] allow` names the private address, network or host; what
//! an admin or the configuration file set up is trusted. The check runs twice: when the URL is
//! given (a clear 422) and when connecting, on every address the name resolves to then, so a
//! name that later resolves elsewhere is still refused.

use hyper::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Who may be reached.
#[derive(Clone, Debug, Default)]
pub enum OutboundPolicy {
    /// Anything: URLs an admin or the configuration file gave.
    #[default]
    Any,
    /// Public addresses, and what the allow list names: URLs a user gave.
    Public(Arc<AllowList>),
}

/// `[outbound] allow`: addresses (`10.0.0.5`), networks (`192.168.1.0/24`, `fd00::/8`) and
/// host names (`llm.lan`, whose addresses are then trusted whatever they are). No ports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowList {
    networks: Vec<(IpAddr, u8)>,
    names: Vec<String>,
}

/// A connection refused by the policy.
#[derive(Debug, thiserror::Error)]
#[error("{host} is {ip}, a private address that agents of users may not reach (an admin can allow it in [outbound] allow)")]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
}

impl AllowList {
    /// Parses the entries; the error names the one that is neither address, network nor name.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries {
            let text = entry.trim();
            if let Some((address, bits)) = text.split_once('/') {
                let ip: IpAddr = address
                    .parse()
                    .map_err(|_| format!("{entry:?}: not an address/prefix"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{entry:?}: prefix length must be 0-{max}"))?;
                list.networks.push((ip.to_canonical(), bits));
            } else if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
                let ip = ip.to_canonical();
                list.networks
                    .push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else if is_host_name(text) {
                list.names.push(normal_name(text));
            } else {
                return Err(format!(
                    "{entry:?}: write an address, a network (addr/bits) or a host name, without port"
                ));
            }
        }
        Ok(list)
    }

    fn permits(&self, host: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.names.iter().any(|name| *name == normal_name(host))
            || self
                .networks
                .iter()
                .any(|(network, bits)| in_network(ip, *network, *bits))
    }
}

impl OutboundPolicy {
    /// The policy for a URL given by someone: admins are trusted, others get `Public`.
    pub fn for_caller(is_admin: bool, allow: &AllowList) -> OutboundPolicy {
        if is_admin {
            OutboundPolicy::Any
        } else {
            OutboundPolicy::Public(Arc::new(allow.clone()))
        }
    }

    /// Ok when a URL naming `host` may connect to every one of `addresses`.
    pub fn check(&self, host: &str, addresses: &[IpAddr]) -> Result<(), Refused> {
        let OutboundPolicy::Public(allow) = self else {
            return Ok(());
        };
        match addresses
            .iter()
            .find(|ip| !is_public(**ip) && !allow.permits(host, **ip))
        {
            Some(ip) => Err(Refused {
                host: host.to_string(),
                ip: *ip,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL when it is given: its address, or what its name resolves to now. A name
    /// that does not resolve passes (it is checked again at every connection).
    pub async fn check_url(&self, uri: &Uri) -> Result<(), Refused> {
        if matches!(self, OutboundPolicy::Any) {
            return Ok(());
        }
        let Some(host) = uri.host().map(|h| h.trim_matches(['[', ']']).to_string()) else {
            return Ok(());
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check(&host, &[ip]);
        }
        let port = port(uri);
        let Ok(resolved) = tokio::net::lookup_host((host.as_str(), port)).await else {
            return Ok(());
        };
        let addresses: Vec<IpAddr> = resolved.map(|a| a.ip()).collect();
        self.check(&host, &addresses)
    }
}

/// The port `uri` names, or its scheme's default.
fn port(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}

/// True for addresses on the public internet: not loopback, link-local, private, shared
/// (CGNAT), unspecified, multicast, broadcast or reserved, nor IPv6 forms of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = || Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the IPv4 address it stands for decides.
        return is_public_v4(embedded_v4());
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[..6] == [0; 6]
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] & 0xfe00) == 0xfc00
        || ip.is_multicast())
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn normal_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The name resolver of the outbound client: resolves, then checks every address.
#[derive(Clone, Debug)]
pub struct Resolver {
    pub policy: OutboundPolicy,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = BoxFuture<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addresses: Vec<IpAddr> = resolved.iter().map(SocketAddr::ip).collect();
            policy.check(&host, &addresses).map_err(|refused| {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused)
            })?;
            Ok(resolved.into_iter())
        })
    }
}

/// A connector that refuses URLs whose host is an address the policy does not permit (names
/// are checked by [`Resolver`]; the inner connector does not resolve address literals).
#[derive(Clone, Debug)]
pub struct Guarded<C> {
    pub inner: C,
    pub policy: OutboundPolicy,
}

impl<C> tower_service::Service<Uri> for Guarded<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<C::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        if let Ok(ip) = host.parse::<IpAddr>() {
            if let Err(refused) = self.policy.check(&host, &[ip]) {
                return Box::pin(std::future::ready(Err(refused.into())));
            }
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: &str, public: bool) {
        let ip: IpAddr = address.parse().unwrap();
        assert_eq!(is_public(ip), public, "{address}");
    }

    #[test]
    fn private_and_special_ranges_are_not_public() {
        for address in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.251",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::fb",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            check(address, false);
        }
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            check(address, true);
        }
    }

    #[test]
    fn the_allow_list_names_addresses_networks_and_hosts() {
        let list = AllowList::parse(&[
            "10.0.0.5".into(),
            "192.168.1.0/24".into(),
            "fd00::/8".into(),
            "LLM.lan.".into(),
        ])
        .unwrap();
        let policy = OutboundPolicy::Public(Arc::new(list));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(policy.check("x", &[ip("10.0.0.5")]).is_ok());
        assert!(policy.check("x", &[ip("10.0.0.6")]).is_err());
        assert!(policy.check("x", &[ip("192.168.1.200")]).is_ok());
        assert!(policy.check("x", &[ip("192.168.2.1")]).is_err());
        assert!(policy.check("x", &[ip("fd00::1")]).is_ok());
        assert!(policy.check("llm.lan", &[ip("127.0.0.1")]).is_ok());
        assert!(policy.check("other.lan", &[ip("127.0.0.1")]).is_err());
        // Every address of a name must pass.
        assert!(policy
            .check("x", &[ip("1.1.1.1"), ip("127.0.0.1")])
            .is_err());
        assert!(OutboundPolicy::Any.check("x", &[ip("127.0.0.1")]).is_ok());
        for bad in ["10.0.0.0/33", "llm.lan:8080", "http://x", "1.2.3.4/x", ""] {
            assert!(AllowList::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
