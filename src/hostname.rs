//! The host's name, for the mDNS advertisement and the names of the self-signed TLS
//! certificate.

/// The host's name, from `uname` (the unit's `ProcSubset=pid` hides `/proc/sys`).
pub fn hostname() -> Option<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_string();
    Some(name).filter(|n| !n.is_empty())
}
