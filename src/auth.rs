//! Who is calling: bearer JWTs (HS256, secret generated into the data dir), revocation that
//! is checked on every request and fails closed, scoped device tokens, and login throttling.

use crate::clock::Timestamp;
use crate::records::{Role, User};
use crate::store::{self, Store};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

pub mod throttle;
pub use throttle::{Reservation, Throttle};

/// The file holding the token signing secret.
pub const SECRET_FILE: &str = "jwt-secret";
/// Verified tokens remembered at most; the map starts over when full.
const VERIFIED_CACHE: usize = 4096;

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
    #[error("too many failed logins; try again in {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("wrong username or password")]
    BadCredentials,
    #[error("token secret {path}: {message}")]
    Secret { path: String, message: String },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    /// Scopes of a device token; None for a full login token.
    pub scope: Option<Vec<String>>,
    pub jti: String,
    pub expires_at: i64,
    /// When the token was minted (unix seconds): a token older than its account was minted
    /// for an earlier account of the same name.
    pub issued_at: i64,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Fails unless the token allows `scope` (full tokens allow everything).
    pub fn require_scope(&self, scope: &str) -> Result<(), Error> {
        match &self.scope {
            None => Ok(()),
            Some(scopes) if scopes.iter().any(|s| s == scope) => Ok(()),
            Some(_) => Err(Error::OutOfScope),
        }
    }

    /// Fails unless the caller is an admin with a full token.
    pub fn require_admin(&self) -> Result<(), Error> {
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
    /// Every account by name, with when it was made (unix seconds), mirrored from the store:
    /// the token of a removed account is refused at once, not when it expires.
    accounts: RwLock<HashMap<String, i64>>,
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
            accounts: RwLock::new(accounts.iter().map(account).collect()),
        })
    }

    /// Tokens of this account are accepted from now on (it was just made).
    pub fn account_added(&self, user: &User) {
        let (name, created) = account(user);
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        accounts.insert(name, created);
    }

    /// Tokens of this account are refused from now on (it was just removed).
    pub fn account_removed(&self, username: &str) {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        accounts.remove(username);
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

    /// Checks a bearer token: signature, algorithm, expiry, revocation, and that its account
    /// still exists (and is not a newer one of the same name).
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let caller = match self.recently_verified(token) {
            Some(caller) => caller,
            None => self.decode(token)?,
        };
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
            Some(created) if *created <= caller.issued_at => Ok(caller),
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
            .write(move |tx| tx.revoke_token(&jti, exp, now))
            .await?;
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, expiry| *expiry > now);
        revoked.insert(caller.jti.clone(), exp);
        Ok(())
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

/// An account's entry in `Auth::accounts`.
fn account(user: &User) -> (String, i64) {
    (user.username.clone(), user.created_at.unix_seconds())
}

fn secret_error(data_dir: &Path, err: impl std::fmt::Display) -> Error {
    Error::Secret {
        path: data_dir.join(SECRET_FILE).display().to_string(),
        message: err.to_string(),
    }
}

/// Reads the signing secret, creating it (0600) at first start.
fn load_secret(data_dir: &Path) -> Result<Vec<u8>, Error> {
    let path = data_dir.join(SECRET_FILE);
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
            crate::users::write_private(&path, format!("{secret}\n").as_bytes())
                .map_err(|e| secret_error(data_dir, e))?;
            Ok(secret.into_bytes())
        }
        Err(err) => Err(secret_error(data_dir, err)),
    }
}
