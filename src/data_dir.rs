//! The data directory: the name of every entry Outpost keeps in it, and the one way each
//! kind of entry is made. The directory and the ones inside it are 0700, and every file
//! holding a secret or a record (the store, the token secret, the admin password, the TLS
//! key, the control socket, backups) is 0600, whatever the umask: they hold every account's
//! hash and every conversation. Only the self-signed certificate, public by nature, is
//! written with the umask's mode.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The store file.
pub const STORE_FILE: &str = "outpost.redb";
/// The token signing secret.
pub const SECRET_FILE: &str = "jwt-secret";
/// The first start's admin password, when none was configured.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
/// The control socket `outpost backup` asks for a copy through.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Where `tls.mode = "auto"` keeps its certificate and key.
pub const TLS_DIR: &str = "tls";
const TLS_CERT: &str = "cert.pem";
const TLS_KEY: &str = "key.pem";

/// The store file in `dir`.
pub fn store_file(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// The token signing secret in `dir`.
pub fn secret_file(dir: &Path) -> PathBuf {
    dir.join(SECRET_FILE)
}

/// The first start's admin password in `dir`.
pub fn admin_password_file(dir: &Path) -> PathBuf {
    dir.join(ADMIN_PASSWORD_FILE)
}

/// The control socket in `dir`.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}

/// The auto TLS directory in `dir`.
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join(TLS_DIR)
}

/// The auto TLS certificate in `dir`.
pub fn tls_cert(dir: &Path) -> PathBuf {
    tls_dir(dir).join(TLS_CERT)
}

/// The auto TLS private key in `dir`.
pub fn tls_key(dir: &Path) -> PathBuf {
    tls_dir(dir).join(TLS_KEY)
}

/// A new name for the copy a backup through the daemon streams from `dir`.
pub fn backup_copy(dir: &Path) -> PathBuf {
    dir.join(format!("backup-{}.redb", crate::ids::random_token(8)))
}

/// Makes `dir` (and missing parents) a directory only its owner may use (0700), narrowing
/// one that exists.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The owner's own directory is narrowed when it can be; one it cannot change still works.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Makes `path` a file only its owner may read and write (0600) whatever the umask: created
/// empty when missing (redb initialises an empty file), narrowed when it exists.
pub fn make_private(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    narrow(path)
}

/// Narrows an existing entry (a socket once bound) to its owner (0600).
pub fn narrow(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Writes a file only its owner can read (0600), replacing any earlier one.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn entries_are_made_private_and_named_as_before() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state").join("data");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing data dir is narrowed");

        make_private(&store_file(&dir)).unwrap();
        write_private(&secret_file(&dir), b"secret\n").unwrap();
        write_private(&secret_file(&dir), b"again\n").unwrap();
        assert_eq!(mode(&dir.join("outpost.redb")), 0o600);
        assert_eq!(mode(&dir.join("jwt-secret")), 0o600);
        assert_eq!(std::fs::read(dir.join("jwt-secret")).unwrap(), b"again\n");
        assert_eq!(admin_password_file(&dir), dir.join("admin-password"));
        assert_eq!(control_socket(&dir), dir.join("control.sock"));
        assert_eq!(tls_cert(&dir), dir.join("tls/cert.pem"));
        assert_eq!(tls_key(&dir), dir.join("tls/key.pem"));
        let copy = backup_copy(&dir);
        assert_eq!(copy.parent(), Some(dir.as_path()));
        assert!(copy
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("backup-"));
    }
}
