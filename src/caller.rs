//! Who is calling: the account, role and scope a verified token names. Services take a
//! [`Caller`] to decide what it may see and do; `auth` makes one from a token and refuses
//! requests its scope or role does not cover.

use crate::records::Role;

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
    /// The account the token was minted for (`User::id`; empty in tokens of accounts made
    /// before ids existed).
    pub account_id: String,
    /// The account's token generation when the token was minted.
    pub generation: u64,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the token allows `scope` (full tokens allow everything).
    pub fn allows(&self, scope: &str) -> bool {
        match &self.scope {
            None => true,
            Some(scopes) => scopes.iter().any(|s| s == scope),
        }
    }
}
