//! What administration keeps: the admin flags, the audit log and the registration tokens, each
//! change its own durable transaction.

use hearth_spec::UserId;
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::*;
use super::{Store, StoreError, decode, encode, parse_id};

/// How a registration with a token went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRegistration {
    /// The user exists now and the token has one use less.
    Registered,
    /// The username was taken; the token was not used.
    UserExists,
    /// No such token, or it is used up or expired; no user was made.
    TokenRefused,
}

impl Store {
    /// Sets or clears a user's admin flag.
    pub fn set_admin(&self, user: &UserId, admin: bool) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut admins = txn.open_table(ADMINS)?;
            if admin {
                admins.insert(user.as_str(), ())?;
            } else {
                admins.remove(user.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether a user has the admin flag.
    pub fn is_admin(&self, user: &UserId) -> Result<bool, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn.open_table(ADMINS)?.get(user.as_str())?.is_some())
    }

    /// Every user with the admin flag.
    pub fn admins(&self) -> Result<std::collections::HashSet<UserId>, StoreError> {
        let txn = self.begin_read()?;
        let admins = txn.open_table(ADMINS)?;
        admins.iter()?.map(|row| parse_id(row?.0.value())).collect()
    }

    /// Appends an entry to the audit log; its number.
    pub fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError> {
        let txn = self.begin_write()?;
        let seq = {
            let mut audit = txn.open_table(AUDIT)?;
            let seq = audit.last()?.map_or(0, |(k, _)| k.value()) + 1;
            audit.insert(seq, encode(record).as_slice())?;
            seq
        };
        txn.commit()?;
        Ok(seq)
    }

    /// Up to `limit` audit entries after `from`, oldest first.
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let audit = txn.open_table(AUDIT)?;
        audit
            .range(from.saturating_add(1)..)?
            .take(limit)
            .map(|row| {
                let (k, v) = row?;
                Ok((k.value(), decode(v.value())?))
            })
            .collect()
    }

    /// How many entries the audit log holds.
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn.open_table(AUDIT)?.len()?)
    }

    /// Adds a registration token; false if that token exists.
    pub fn insert_registration_token(
        &self,
        token: &str,
        record: &RegistrationTokenRecord,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let inserted = {
            let mut tokens = txn.open_table(REGISTRATION_TOKENS)?;
            if tokens.get(token)?.is_some() {
                false
            } else {
                tokens.insert(token, encode(record).as_slice())?;
                true
            }
        };
        txn.commit()?;
        Ok(inserted)
    }

    /// Every registration token, in token order.
    pub fn registration_tokens(
        &self,
    ) -> Result<Vec<(String, RegistrationTokenRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let tokens = txn.open_table(REGISTRATION_TOKENS)?;
        tokens
            .iter()?
            .map(|row| {
                let (k, v) = row?;
                Ok((k.value().to_owned(), decode(v.value())?))
            })
            .collect()
    }

    /// Removes a registration token; whether it existed.
    pub fn delete_registration_token(&self, token: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let existed = txn
            .open_table(REGISTRATION_TOKENS)?
            .remove(token)?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Creates a user and spends one use of `token`, both or neither: two registrations racing
    /// for a token's last use never both succeed.
    pub fn insert_user_with_token(
        &self,
        user: &UserId,
        record: &UserRecord,
        token: &str,
        now_ms: u64,
    ) -> Result<TokenRegistration, StoreError> {
        let txn = self.begin_write()?;
        let outcome = {
            let mut tokens = txn.open_table(REGISTRATION_TOKENS)?;
            let mut users = txn.open_table(USERS)?;
            let found: Option<RegistrationTokenRecord> =
                tokens.get(token)?.map(|v| decode(v.value())).transpose()?;
            match found {
                Some(mut found) if found.admits(now_ms) => {
                    if users.get(user.as_str())?.is_some() {
                        TokenRegistration::UserExists
                    } else {
                        users.insert(user.as_str(), encode(record).as_slice())?;
                        found.uses += 1;
                        tokens.insert(token, encode(&found).as_slice())?;
                        TokenRegistration::Registered
                    }
                }
                _ => TokenRegistration::TokenRefused,
            }
        };
        if outcome == TokenRegistration::Registered {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hearth.redb")).unwrap();
        (dir, store)
    }

    fn user(name: &str) -> UserId {
        UserId::parse(&format!("@{name}:example.org")).unwrap()
    }

    fn record() -> UserRecord {
        UserRecord {
            password_hash: "x".into(),
            created_ts: 1,
            deactivated: false,
        }
    }

    #[test]
    fn a_token_admits_as_many_registrations_as_it_allows_until_it_expires() {
        let (_dir, store) = store();
        let token = RegistrationTokenRecord {
            uses_allowed: Some(2),
            uses: 0,
            expires_ms: Some(1_000),
            created_ts: 0,
        };
        assert!(store.insert_registration_token("t", &token).unwrap());
        assert!(!store.insert_registration_token("t", &token).unwrap());
        let with = |name: &str, now| {
            store
                .insert_user_with_token(&user(name), &record(), "t", now)
                .unwrap()
        };
        assert_eq!(with("a", 10), TokenRegistration::Registered);
        // A taken name spends nothing.
        assert_eq!(with("a", 10), TokenRegistration::UserExists);
        assert_eq!(with("b", 10), TokenRegistration::Registered);
        assert_eq!(with("c", 10), TokenRegistration::TokenRefused);
        assert!(store.user(&user("c")).unwrap().is_none());
        assert_eq!(store.registration_tokens().unwrap()[0].1.uses, 2);

        let open = RegistrationTokenRecord {
            uses_allowed: None,
            ..token
        };
        store.insert_registration_token("u", &open).unwrap();
        assert_eq!(
            store
                .insert_user_with_token(&user("d"), &record(), "u", 999)
                .unwrap(),
            TokenRegistration::Registered
        );
        assert_eq!(
            store
                .insert_user_with_token(&user("e"), &record(), "u", 1_000)
                .unwrap(),
            TokenRegistration::TokenRefused,
            "expired"
        );
        assert_eq!(
            store
                .insert_user_with_token(&user("e"), &record(), "nope", 0)
                .unwrap(),
            TokenRegistration::TokenRefused
        );
        assert!(store.delete_registration_token("u").unwrap());
        assert!(!store.delete_registration_token("u").unwrap());
    }

    #[test]
    fn the_audit_log_numbers_entries_from_one_and_pages_after_a_number() {
        let (_dir, store) = store();
        for i in 0..5 {
            let seq = store
                .append_audit(&AuditRecord {
                    ts: i,
                    actor: "@root:example.org".into(),
                    action: "create_user".into(),
                    target: format!("@u{i}:example.org"),
                })
                .unwrap();
            assert_eq!(seq, i + 1);
        }
        let page = store.audit(2, 2).unwrap();
        assert_eq!(
            page.iter().map(|(n, r)| (*n, r.ts)).collect::<Vec<_>>(),
            vec![(3, 2), (4, 3)]
        );
        assert_eq!(store.audit_len().unwrap(), 5);
        store.set_admin(&user("root"), true).unwrap();
        assert!(store.is_admin(&user("root")).unwrap());
        store.set_admin(&user("root"), false).unwrap();
        assert!(!store.is_admin(&user("root")).unwrap());
    }
}
