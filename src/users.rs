//! Users: accounts with argon2id password hashes, and the first-start `admin`.

use crate::clock::Timestamp;
use crate::records::{Removed, Role, User};
use crate::store::{self, Store};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod hashing;
pub use hashing::{Busy, HashPool};

const MIN_PASSWORD_CHARS: usize = 8;
/// The longest username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 64;
/// The longest password, in bytes: argon2 reads all of it.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What can go wrong with users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user {0} already exists")]
    Exists(String),
    #[error("user not found")]
    NotFound,
    #[error(
        "usernames are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName,
    #[error("passwords need at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("passwords are at most {MAX_PASSWORD_BYTES} bytes")]
    LongPassword,
    #[error("too many passwords are being checked at once; try again in a moment")]
    Busy,
    #[error("the last admin cannot be removed")]
    LastAdmin,
    #[error("writing {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// True for a valid username.
pub fn valid_username(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_USERNAME_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// argon2id with 46 MiB and one pass, one of OWASP's equivalent settings. The memory is
/// above glibc's largest mmap threshold (32 MiB), so every hash maps and unmaps its own
/// memory: the 19 MiB default would stay in the heap after the first login and more than
/// double the daemon's idle memory.
fn hasher() -> Argon2<'static> {
    let params = argon2::Params::new(47_104, 1, 1, None).expect("valid argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hashes a password with argon2id (blocking, ~tens of ms in release).
fn hash_password(password: &str) -> String {
    hasher()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .expect("argon2 hashing with default parameters succeeds")
}

/// Checks a password against a PHC string (blocking); the string carries its parameters.
fn password_matches(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => hasher().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches in practice, checked for unknown users so that a login for a
/// missing account takes as long as one for a real account.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::ids::random_token(16)))
}

/// Refuses a password too short or too long to be set.
fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::WeakPassword);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::LongPassword);
    }
    Ok(())
}

impl From<Busy> for Error {
    fn from(_: Busy) -> Error {
        Error::Busy
    }
}

/// Cheap-clone handle to the users service.
#[derive(Clone)]
pub struct Users {
    store: Store,
    /// Every argon2id hash runs here: logins, new users, new passwords.
    hashing: HashPool,
}

impl Users {
    pub fn new(store: Store, hashing: HashPool) -> Users {
        Users { store, hashing }
    }

    /// Creates a user.
    pub async fn create(&self, username: &str, password: &str, role: Role) -> Result<User, Error> {
        if !valid_username(username) {
            return Err(Error::InvalidName);
        }
        check_password(password)?;
        let password = password.to_string();
        let password_hash = self.hashing.run(move || hash_password(&password)).await?;
        let user = User {
            username: username.to_string(),
            role,
            password_hash,
            created_at: Timestamp::now(),
            id: crate::ids::new_id(),
            token_generation: 0,
        };
        let stored = user.clone();
        let created = self
            .store
            .write(move |tx| {
                if tx.user(&stored.username)?.is_some() {
                    return Ok(false);
                }
                tx.put_user(&stored)?;
                Ok(true)
            })
            .await?;
        if !created {
            return Err(Error::Exists(user.username));
        }
        Ok(user)
    }

    /// The user whose name and password these are, or None (constant work either way: an
    /// unknown or malformed name is checked against a decoy hash). `Busy` when the hashing
    /// pool's queue is full.
    pub async fn verify(&self, username: &str, password: &str) -> Result<Option<User>, Error> {
        let name = username.to_string();
        let user = if valid_username(username) {
            self.store.read(move |r| r.user(&name)).await?
        } else {
            None
        };
        let password = password.to_string();
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self
            .hashing
            .run(move || match &phc {
                Some(phc) => password_matches(&password, phc),
                None => password_matches(&password, decoy_hash()),
            })
            .await?;
        Ok(user.filter(|_| matches))
    }

    pub async fn get(&self, username: &str) -> Result<User, Error> {
        let name = username.to_string();
        self.store
            .read(move |r| r.user(&name))
            .await?
            .ok_or(Error::NotFound)
    }

    pub async fn list(&self) -> Result<Vec<User>, Error> {
        Ok(self.store.read(|r| r.users()).await?)
    }

    /// Sets a new password; tokens minted before it are refused from now on (the account's
    /// token generation moves on). Returns the changed account.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<User, Error> {
        check_password(password)?;
        let password = password.to_string();
        let hash = self.hashing.run(move || hash_password(&password)).await?;
        let name = username.to_string();
        let found = self
            .store
            .write(move |tx| match tx.user(&name)? {
                Some(mut user) => {
                    user.password_hash = hash;
                    user.token_generation += 1;
                    tx.put_user(&user)?;
                    Ok(Some(user))
                }
                None => Ok(None),
            })
            .await?;
        found.ok_or(Error::NotFound)
    }

    /// Fails unless `username` exists and may be removed (the last admin stays).
    pub async fn check_removable(&self, username: &str) -> Result<User, Error> {
        let name = username.to_string();
        self.store
            .read(move |r| {
                let Some(user) = r.user(&name)? else {
                    return Ok(Err(Error::NotFound));
                };
                let admins = r.users()?.iter().filter(|u| u.role == Role::Admin).count();
                if user.role == Role::Admin && admins <= 1 {
                    return Ok(Err(Error::LastAdmin));
                }
                Ok(Ok(user))
            })
            .await?
    }

    /// Removes a user and, in the same transaction, everything stored under its name, so a
    /// later account of that name starts empty; API agents it owned pass to `heir`. The last
    /// admin stays.
    pub async fn remove(&self, username: &str, heir: &str) -> Result<Removed, Error> {
        let (name, heir) = (username.to_string(), heir.to_string());
        self.store
            .write(move |tx| {
                let Some(user) = tx.user(&name)? else {
                    return Ok(Err(Error::NotFound));
                };
                if user.role == Role::Admin {
                    // Counting admins needs a scan; users are few.
                    let admins = tx.admin_count()?;
                    if admins <= 1 {
                        return Ok(Err(Error::LastAdmin));
                    }
                }
                Ok(Ok(tx.delete_account(&name, &heir)?))
            })
            .await?
    }

    /// The admin that inherits a removed account's agents when no admin asked for the removal
    /// (the command line): the oldest other admin.
    pub async fn default_heir(&self, removed: &str) -> Result<String, Error> {
        let mut admins: Vec<User> = self
            .list()
            .await?
            .into_iter()
            .filter(|u| u.role == Role::Admin && u.username != removed)
            .collect();
        admins.sort_by_key(|u| u.created_at);
        admins
            .into_iter()
            .next()
            .map(|u| u.username)
            .ok_or(Error::LastAdmin)
    }

    /// First start: with no users at all, creates `admin` with `env_password` or a random
    /// password written to `<data_dir>/admin-password` (0600). Returns that file's path when
    /// it wrote one.
    pub async fn first_start(
        &self,
        data_dir: &Path,
        env_password: Option<String>,
    ) -> Result<Option<PathBuf>, Error> {
        let count = self.store.read(|r| r.users().map(|u| u.len())).await?;
        if count > 0 {
            return Ok(None);
        }
        let (password, file) = match env_password.filter(|p| !p.is_empty()) {
            Some(password) => (password, None),
            None => {
                let password = crate::ids::random_token(15);
                let path = crate::data_dir::admin_password_file(data_dir);
                crate::data_dir::write_private(&path, format!("{password}\n").as_bytes()).map_err(
                    |source| Error::File {
                        path: path.clone(),
                        source,
                    },
                )?;
                (password, Some(path))
            }
        };
        self.create("admin", &password, Role::Admin).await?;
        Ok(file)
    }
}
