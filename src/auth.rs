//! Who is calling: bearer JWTs (HS256, secret generated into the data dir), revocation that
//! is checked on every request and fails closed, scoped device tokens, and login throttling.
//!
//! A token names the account it was minted for (its id and token generation), so removing
//! an account or changing its password refuses every earlier token at once. Every stream and
//! call holds a [`SessionEnd`] that resolves when its token stops being accepted.

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::records::{DeviceToken, Role, User};
use crate::store::{self, Store};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

pub mod throttle;
pub use throttle::{Reservation, Throttle};

/// Verified tokens remembered at most; the map starts over when full.
const VERIFIED_CACHE: usize = 4096;
/// Endings queued for open streams and calls; one that falls this far behind ends (fail
/// closed), which takes more revocations at once than a box sees in practice.
const ENDINGS_QUEUED: usize = 256;

/// What can go wrong authenticating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid or expired token")]
    Invalid,
    #[error("this token has been revoked")]
    Revoked,
    #[error("the account of this token no longer exists")]
    NoAccount,
    #[error("this token's scope does not allow this request")]
    OutOfScope,
    #[error("admin only")]
    AdminOnly,
    #[error("device token not found")]
    TokenNotFound,
    #[error("too many failed logins; try again in {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("wrong username or password")]
    BadCredentials,
    #[error("token secret {path}: {message}")]
    Secret { path: String, message: String },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The checks a route makes of its caller, refused with this module's errors.
pub trait Require {
    /// Fails unless the token allows `scope` (full tokens allow everything).
    fn require_scope(&self, scope: &str) -> Result<(), Error>;
    /// Fails unless the caller is an admin with a full token.
    fn require_admin(&self) -> Result<(), Error>;
}

impl Require for Caller {
    fn require_scope(&self, scope: &str) -> Result<(), Error> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(Error::OutOfScope)
        }
    }

    fn require_admin(&self) -> Result<(), Error> {
        if !self.is_admin() {
            return Err(Error::AdminOnly);
        }
        if self.scope.is_some() {
            return Err(Error::OutOfScope);
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// `User::id` of the account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    uid: String,
    /// `User::token_generation` at minting.
    #[serde(default)]
    generation: u64,
}

/// What an account's tokens are checked against.
#[derive(Clone, Debug)]
struct Account {
    id: String,
    /// Unix seconds.
    created_at: i64,
    generation: u64,
}

impl Account {
    fn of(user: &User) -> Account {
        Account {
            id: user.id.clone(),
            created_at: user.created_at.unix_seconds(),
            generation: user.token_generation,
        }
    }

    /// True when `caller`'s token was minted for this account as it is now.
    fn accepts(&self, caller: &Caller) -> bool {
        let same_account = if self.id.is_empty() && caller.account_id.is_empty() {
            self.created_at <= caller.issued_at
        } else {
            self.id == caller.account_id
        };
        same_account && self.generation == caller.generation
    }
}

/// Tokens that stopped being accepted, as open streams and calls hear of it.
#[derive(Clone, Debug)]
enum Ending {
    /// One token, by its id.
    Token(String),
    /// Every token of an account (removed, or its password changed).
    Account(String),
}

/// Resolves once a caller's token is no longer accepted (revoked, its account removed, or
/// its password changed). A stream or call waits on it beside its work and ends when it
/// resolves.
pub struct SessionEnd {
    endings: broadcast::Receiver<Ending>,
    username: String,
    jti: String,
    ended: bool,
}

impl SessionEnd {
    /// Waits for the end; cancel-safe.
    pub async fn wait(&mut self) {
        while !self.ended {
            match self.endings.recv().await {
                Ok(Ending::Token(jti)) => self.ended = jti == self.jti,
                Ok(Ending::Account(name)) => self.ended = name == self.username,
                // Some endings were missed: one of them may have been ours.
                Err(broadcast::error::RecvError::Lagged(_)) => self.ended = true,
                // The daemon is stopping; shutdown ends the stream.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// A minted token.
#[derive(Debug, Serialize)]
pub struct Issued {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Token minting and checking, and the login throttle.
pub struct Auth {
    store: Store,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Login attempts per (account, address) and per address.
    throttle: Throttle,
    /// Revoked token ids with their expiry (unix seconds), mirrored from the store.
    revoked: RwLock<HashMap<String, i64>>,
    /// Tokens whose signature checked out, with their claims; expiry, revocation and the
    /// account are still checked on every use.
    verified: Mutex<HashMap<String, Caller>>,
    /// Every account by name, mirrored from the store: the token of a removed account, or
    /// one minted before a password change, is refused at once, not when it expires.
    accounts: RwLock<HashMap<String, Account>>,
    /// Told of every revocation, removal and password change.
    endings: broadcast::Sender<Ending>,
}

impl Auth {
    /// Loads (or creates, 0600) the signing secret and the revocation list.
    pub async fn open(
        store: Store,
        data_dir: &Path,
        ttl: Duration,
        attempts_per_minute: u32,
    ) -> Result<Auth, Error> {
        let secret = load_secret(data_dir)?;
        let now = Timestamp::now().unix_seconds();
        let revoked = store.read(move |r| r.revoked_tokens(now)).await?;
        let accounts = store.read(|r| r.users()).await?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Auth {
            store,
            encoding: EncodingKey::from_secret(&secret).map_err(|e| secret_error(data_dir, e))?,
            decoding: DecodingKey::from_secret(&secret).map_err(|e| secret_error(data_dir, e))?,
            validation,
            ttl,
            throttle: Throttle::new(attempts_per_minute as usize, throttle::TABLE_BYTES),
            revoked: RwLock::new(revoked.into_iter().collect()),
            verified: Mutex::new(HashMap::new()),
            accounts: RwLock::new(
                accounts
                    .iter()
                    .map(|u| (u.username.clone(), Account::of(u)))
                    .collect(),
            ),
            endings: broadcast::channel(ENDINGS_QUEUED).0,
        })
    }

    /// Tokens of this account are accepted from now on (it was just made).
    pub fn account_added(&self, user: &User) {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        accounts.insert(user.username.clone(), Account::of(user));
    }

    /// The account changed its password: only tokens minted from now on are accepted, and
    /// the streams and calls of earlier ones end.
    pub fn account_changed(&self, user: &User) {
        self.account_added(user);
        let _ = self.endings.send(Ending::Account(user.username.clone()));
    }

    /// Tokens of this account are refused from now on (it is being removed), and its open
    /// streams and calls end.
    pub fn account_removed(&self, username: &str) {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        accounts.remove(username);
        drop(accounts);
        let _ = self.endings.send(Ending::Account(username.to_string()));
    }

    /// What ends the streams and calls of `caller`: already ended when its token is no
    /// longer accepted (so a revocation between authentication and now is not missed).
    pub fn session_end(&self, caller: &Caller) -> SessionEnd {
        let endings = self.endings.subscribe();
        SessionEnd {
            endings,
            username: caller.username.clone(),
            jti: caller.jti.clone(),
            ended: self.check(caller).is_err(),
        }
    }

    /// The default lifetime of login tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for `user`, valid for `ttl`, limited to `scope` (space-separated) if given.
    pub fn issue(&self, user: &User, ttl: Duration, scope: Option<String>) -> Issued {
        let now = Timestamp::now().unix_seconds();
        let claims = Claims {
            sub: user.username.clone(),
            role: user.role,
            iat: now,
            exp: now + ttl.as_secs() as i64,
            jti: crate::ids::new_id(),
            scope: scope.clone(),
            uid: user.id.clone(),
            generation: user.token_generation,
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .expect("HS256 signing with a valid key succeeds");
        Issued {
            access_token,
            token_type: "bearer",
            expires_in: ttl.as_secs(),
            scope,
        }
    }

    /// Mints a device token and records it, so that it can be listed and revoked.
    pub async fn issue_device(
        &self,
        user: &User,
        ttl: Duration,
        scope: Option<String>,
        label: Option<String>,
    ) -> Result<(Issued, DeviceToken), Error> {
        let issued = self.issue(user, ttl, scope.clone());
        let caller = self.decode(&issued.access_token)?;
        let record = DeviceToken {
            id: caller.jti,
            username: user.username.clone(),
            account_id: user.id.clone(),
            scope,
            label,
            created_at: Timestamp(caller.issued_at * 1000),
            expires_at: Timestamp(caller.expires_at * 1000),
        };
        let stored = record.clone();
        let now = Timestamp::now().0;
        self.store
            .write(move |tx| {
                tx.drop_expired_device_tokens(now)?;
                tx.put_device_token(&stored)
            })
            .await?;
        Ok((issued, record))
    }

    /// Device tokens not yet expired: the caller's own, or everyone's for an admin.
    pub async fn device_tokens(
        &self,
        caller: &Caller,
        all: bool,
    ) -> Result<Vec<DeviceToken>, Error> {
        let username = (!(all && caller.is_admin())).then(|| caller.username.clone());
        let now = Timestamp::now().0;
        let tokens = self
            .store
            .read(move |r| r.device_tokens(username.as_deref(), now))
            .await?;
        Ok(tokens)
    }

    /// Revokes the device token `id` (its owner's or, for an admin, anyone's) until it
    /// expires; its streams and calls end. Another user's token is not found.
    pub async fn revoke_device_token(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<DeviceToken, Error> {
        let owner = (!caller.is_admin()).then(|| caller.username.clone());
        self.revoke_device(id, owner).await
    }

    /// Revokes the device token `id`, if it belongs to `owner` (any owner when None).
    async fn revoke_device(&self, id: &str, owner: Option<String>) -> Result<DeviceToken, Error> {
        let id = id.to_string();
        let now = Timestamp::now();
        let token = self
            .store
            .write(move |tx| {
                let found = tx.device_token(&id)?;
                let Some(token) = found.filter(|t| owner.is_none_or(|o| o == t.username)) else {
                    return Ok(None);
                };
                let expires = token.expires_at.unix_seconds();
                tx.revoke_token(&token.id, expires, now.unix_seconds())?;
                tx.delete_device_token(&token.id)?;
                Ok(Some(token))
            })
            .await?
            .ok_or(Error::TokenNotFound)?;
        self.revoked_now(&token.id, token.expires_at.unix_seconds());
        Ok(token)
    }

    /// Device tokens not yet expired, of `username` or everyone (the command line's view).
    pub async fn stored_device_tokens(
        &self,
        username: Option<&str>,
    ) -> Result<Vec<DeviceToken>, Error> {
        let (username, now) = (username.map(str::to_string), Timestamp::now().0);
        let tokens = self
            .store
            .read(move |r| r.device_tokens(username.as_deref(), now))
            .await?;
        Ok(tokens)
    }

    /// Revokes any device token by id (the command line's view).
    pub async fn revoke_stored_device_token(&self, id: &str) -> Result<DeviceToken, Error> {
        self.revoke_device(id, None).await
    }

    /// Checks a bearer token: signature, algorithm, expiry, revocation, and that its account
    /// still exists (and is not a newer one of the same name).
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let caller = match self.recently_verified(token) {
            Some(caller) => caller,
            None => self.decode(token)?,
        };
        self.check(&caller)?;
        Ok(caller)
    }

    /// Whether the token `caller` came with is still accepted: not expired, not revoked,
    /// minted for its account as it is now.
    pub fn check(&self, caller: &Caller) -> Result<(), Error> {
        // Checked every time, cached or not: expiry, then revocation. Fail closed: a poisoned
        // lock means we cannot tell, so the answer is no.
        if caller.expires_at <= Timestamp::now().unix_seconds() {
            return Err(Error::Invalid);
        }
        let revoked = self.revoked.read().map_err(|_| Error::Revoked)?;
        if revoked.contains_key(&caller.jti) {
            return Err(Error::Revoked);
        }
        let accounts = self.accounts.read().map_err(|_| Error::NoAccount)?;
        match accounts.get(&caller.username) {
            Some(account) if account.accepts(caller) => Ok(()),
            _ => Err(Error::NoAccount),
        }
    }

    /// The caller of a token whose signature was checked before (a map lookup instead of
    /// base64, JSON and HMAC on every request of a client).
    fn recently_verified(&self, token: &str) -> Option<Caller> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(token).cloned()
    }

    fn decode(&self, token: &str) -> Result<Caller, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| Error::Invalid)?;
        let claims = data.claims;
        let scope = claims
            .scope
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        let caller = Caller {
            username: claims.sub,
            role: claims.role,
            scope,
            jti: claims.jti,
            expires_at: claims.exp,
            issued_at: claims.iat,
            account_id: claims.uid,
            generation: claims.generation,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_string(), caller.clone());
        Ok(caller)
    }

    /// Revokes the caller's token until it expires; durable before it returns.
    pub async fn revoke(&self, caller: &Caller) -> Result<(), Error> {
        let (jti, exp) = (caller.jti.clone(), caller.expires_at);
        let now = Timestamp::now().unix_seconds();
        self.store
            .write(move |tx| {
                tx.revoke_token(&jti, exp, now)?;
                tx.delete_device_token(&jti)?;
                Ok(())
            })
            .await?;
        self.revoked_now(&caller.jti, exp);
        Ok(())
    }

    /// Refuses the token `jti` from now on and ends its streams and calls.
    fn revoked_now(&self, jti: &str, expires_at: i64) {
        let now = Timestamp::now().unix_seconds();
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, expiry| *expiry > now);
        revoked.insert(jti.to_string(), expires_at);
        drop(revoked);
        let _ = self.endings.send(Ending::Token(jti.to_string()));
    }

    /// Counts a login attempt before its password is checked, or refuses it while this
    /// account at this address, or this address, has used up its minute.
    pub fn reserve_login(&self, username: &str, ip: IpAddr) -> Result<Reservation, Error> {
        self.throttle
            .reserve(username, ip)
            .map_err(|refused| Error::Throttled {
                retry_after: refused.retry_after,
            })
    }
}

fn secret_error(data_dir: &Path, err: impl std::fmt::Display) -> Error {
    Error::Secret {
        path: crate::data_dir::secret_file(data_dir).display().to_string(),
        message: err.to_string(),
    }
}

/// Reads the signing secret, creating it (0600) at first start.
fn load_secret(data_dir: &Path) -> Result<Vec<u8>, Error> {
    let path = crate::data_dir::secret_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 64 => Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => Err(secret_error(
            data_dir,
            "too short; delete it to make a new one (this signs out everyone)",
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 48];
            crate::ids::random_bytes(&mut raw);
            let secret = crate::ids::hex(&raw);
            crate::data_dir::write_private(&path, format!("{secret}\n").as_bytes())
                .map_err(|e| secret_error(data_dir, e))?;
            Ok(secret.into_bytes())
        }
        Err(err) => Err(secret_error(data_dir, err)),
    }
}
