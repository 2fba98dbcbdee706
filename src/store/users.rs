//! Users and revoked tokens.

use super::tables::{REVOKED, USERS};
use super::{decode, encode, get_json, Error, Reader, Tx};
use crate::records::User;
use redb::ReadableTable;

impl Tx<'_> {
    /// Inserts or replaces a user.
    pub fn put_user(&self, user: &User) -> Result<(), Error> {
        let mut users = self.txn.open_table(USERS)?;
        users.insert(user.username.as_str(), encode(user).as_slice())?;
        Ok(())
    }

    pub fn user(&self, username: &str) -> Result<Option<User>, Error> {
        get_json(&self.txn.open_table(USERS)?, "users", username)
    }

    /// Removes a user; false when there was none.
    pub fn delete_user(&self, username: &str) -> Result<bool, Error> {
        let mut users = self.txn.open_table(USERS)?;
        let removed = users.remove(username)?.is_some();
        Ok(removed)
    }

    /// How many admins there are.
    pub fn admin_count(&self) -> Result<usize, Error> {
        let users = self.txn.open_table(USERS)?;
        let mut admins = 0;
        for entry in users.iter()? {
            let (_, value) = entry?;
            let user: User = decode("users", value.value())?;
            admins += usize::from(user.role == crate::records::Role::Admin);
        }
        Ok(admins)
    }

    /// Records a revoked token id until `expires_at` (unix seconds); drops expired entries.
    pub fn revoke_token(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), Error> {
        let mut revoked = self.txn.open_table(REVOKED)?;
        revoked.retain(|_, expiry| expiry > now)?;
        revoked.insert(jti, expires_at)?;
        Ok(())
    }
}

impl Reader {
    pub fn user(&self, username: &str) -> Result<Option<User>, Error> {
        get_json(&self.txn.open_table(USERS)?, "users", username)
    }

    /// Every user that can be read, by name (others are logged and skipped).
    pub fn users(&self) -> Result<Vec<User>, Error> {
        let users = self.txn.open_table(USERS)?;
        let mut out = Vec::new();
        for entry in users.iter()? {
            let (name, value) = entry?;
            out.extend(super::decode_or_set_aside::<User>(
                "users",
                name.value(),
                value.value(),
            ));
        }
        Ok(out)
    }

    /// Every revoked token id that has not expired yet, with its expiry.
    pub fn revoked_tokens(&self, now: i64) -> Result<Vec<(String, i64)>, Error> {
        let revoked = self.txn.open_table(REVOKED)?;
        let mut out = Vec::new();
        for entry in revoked.iter()? {
            let (jti, expiry) = entry?;
            if expiry.value() > now {
                out.push((jti.value().to_string(), expiry.value()));
            }
        }
        Ok(out)
    }
}
