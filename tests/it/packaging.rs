//! The packaging as shipped: the systemd unit's contents, its `systemd-analyze` verdicts
//! (verify, and a security exposure of at most 2.0), the package metadata and maintainer
//! scripts, and the packaged configuration (started here on 127.0.0.1 with mDNS off).
//! Building and installing the packages themselves is `packaging/test.sh`.

use crate::support::*;
use outpost::config::{self, Overrides, Tls};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `Key=value` lines of a unit file; a key given twice keeps every value.
fn unit_keys(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            keys.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    keys
}

fn check_unit(keys: &BTreeMap<String, Vec<String>>, key: &str, value: &str) {
    let values = keys.get(key).cloned().unwrap_or_default();
    assert!(
        values.iter().any(|v| v == value),
        "{key}={value} expected; the unit has {key}={values:?}"
    );
}

#[test]
fn the_unit_is_a_hardened_notify_service() {
    let keys = unit_keys(&root().join("systemd/outpost.service"));
    for (key, value) in [
        ("Type", "notify"),
        ("User", "outpost"),
        (
            "ExecStartPre",
            "/usr/bin/outpost check --config /etc/outpost/outpost.toml",
        ),
        (
            "ExecStart",
            "/usr/bin/outpost serve --config /etc/outpost/outpost.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("WatchdogSec", "30s"),
        ("StateDirectory", "outpost"),
        ("ConfigurationDirectory", "outpost"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("SystemCallFilter", "@system-service"),
        ("WantedBy", "multi-user.target"),
    ] {
        check_unit(&keys, key, value);
    }
    // The stop must outlast the drain ([server] shutdown_timeout_s).
    let stop: u64 = keys["TimeoutStopSec"][0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop > outpost::config::Config::default()
            .shutdown_timeout
            .as_secs()
    );
    let socket = unit_keys(&root().join("systemd/outpost.socket"));
    check_unit(&socket, "ListenStream", "8443");
    check_unit(&socket, "Service", "outpost.service");
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("running systemd-analyze (package systemd; tests/run.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn systemd_analyze_rates_the_unit_exposure_at_most_2() {
    let unit = root().join("systemd/outpost.service");
    let (ok, text) = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no verdict in:\n{text}"));
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line:?}"));
    assert!(exposure <= 2.0, "{line}");
}

#[test]
fn systemd_analyze_verifies_the_units_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    // The unit names /usr/bin/outpost, which exists only once installed: point at the build.
    let unit = std::fs::read_to_string(root().join("systemd/outpost.service"))
        .unwrap()
        .replace("/usr/bin/outpost", env!("CARGO_BIN_EXE_outpost"));
    std::fs::write(dir.path().join("outpost.service"), unit).unwrap();
    std::fs::copy(
        root().join("systemd/outpost.socket"),
        dir.path().join("outpost.socket"),
    )
    .unwrap();
    let service = dir.path().join("outpost.service");
    let socket = dir.path().join("outpost.socket");
    let (ok, text) = systemd_analyze(&[
        "verify",
        service.to_str().unwrap(),
        socket.to_str().unwrap(),
    ]);
    assert!(ok && text.trim().is_empty(), "{text}");
}

#[test]
fn package_metadata_names_the_files_scripts_and_dependencies() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let destinations: Vec<String> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let source = a[0].as_str().unwrap();
            assert!(
                source.starts_with("target/release/") || root().join(source).exists(),
                "{source}"
            );
            a[1].as_str().unwrap().to_string()
        })
        .collect();
    for dest in [
        "usr/bin/",
        "usr/lib/systemd/system/",
        "etc/outpost/outpost.toml",
        "usr/share/doc/outpost/README.md",
    ] {
        assert!(destinations.iter().any(|d| d == dest), "{dest}");
    }
    assert!(deb["depends"].as_str().unwrap().contains("$auto"));
    assert!(deb["suggests"].as_str().unwrap().contains("espeak-ng"));
    let rpm = &manifest["package"]["metadata"]["generate-rpm"];
    let conffile = rpm["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dest"].as_str() == Some("/etc/outpost/outpost.toml"))
        .unwrap();
    assert_eq!(conffile["config"].as_str(), Some("noreplace"));
    assert!(rpm["suggests"].get("espeak-ng").is_some());
    for key in [
        "pre_install_script",
        "post_install_script",
        "pre_uninstall_script",
        "post_uninstall_script",
    ] {
        let script = root().join(rpm[key].as_str().unwrap());
        sh_parses(&script);
    }
    for script in ["postinst", "prerm", "postrm"] {
        let path = root().join("packaging/debian").join(script);
        sh_parses(&path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is executable");
    }
    let postrm = std::fs::read_to_string(root().join("packaging/debian/postrm")).unwrap();
    let purge = postrm.split("\"purge\"").nth(1).unwrap();
    assert!(
        purge.contains("rm -rf /var/lib/outpost"),
        "purge deletes the state"
    );
    let remove = postrm.split("\"purge\"").next().unwrap();
    assert!(
        !remove.lines().any(|l| l.trim_start().starts_with("rm ")),
        "remove keeps the state"
    );
}

fn sh_parses(script: &Path) {
    let output = Command::new("sh").arg("-n").arg(script).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_packaged_config_listens_on_8443_with_tls_and_starts_on_loopback() {
    let packaged = root().join("packaging/outpost.toml");
    let raw = config::read_file(&packaged).unwrap();
    let as_shipped = config::Config::from_raw(raw).unwrap();
    assert_eq!(as_shipped.listen, vec!["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(as_shipped.tls, Tls::Auto);
    assert_eq!(as_shipped.data_dir, PathBuf::from("/var/lib/outpost"));
    assert!(as_shipped.mdns);

    // Started as shipped, but on 127.0.0.1, with mDNS off and a temporary data dir.
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        config: Some(packaged),
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
    };
    let mut config = config::load(&overrides, |key| {
        (key == "OUTPOST_ADMIN_PASSWORD").then(|| ADMIN_PASSWORD.to_string())
    })
    .unwrap();
    config.mdns = false;
    let daemon = outpost::start(config).await.unwrap();
    assert!(daemon.tls());
    let tls = client_tls(&dir.path().join("tls/cert.pem"), false);
    let reply = send(
        daemon.local_addrs()[0],
        Some(tls),
        false,
        build(hyper::Method::GET, "/healthz", None, None, &[]),
    )
    .await;
    assert_eq!(reply.status, 200);
    daemon.stop().await;
}

/// The packages carry every page the README links to: each `docs/*.md` and the changelog.
#[test]
fn packages_carry_the_docs_pages() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let metadata = &manifest["package"]["metadata"];
    let deb: Vec<&str> = metadata["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_str().unwrap())
        .collect();
    let rpm: Vec<&str> = metadata["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    let mut pages = vec!["README.md".to_string(), "CHANGELOG.md".to_string()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    assert!(pages.len() > 3, "{pages:?}");
    for page in &pages {
        assert!(deb.contains(&page.as_str()), "{page} is not in the .deb");
        assert!(rpm.contains(&page.as_str()), "{page} is not in the .rpm");
    }
}
