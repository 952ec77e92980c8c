//! A linked session kept as keyed rows in the caller's database rather than
//! in a file of its own: the caller (whatan) implements [`SessionRows`] for
//! one account, and [`crate::backend::RowBackend`] turns it into the
//! library's storage backend. The rows are what lets an account move to
//! another machine without pairing again.
//!
//! A row is `(kind, key) -> (value, ts)`: `kind` says which of the library's
//! maps the row belongs to ([`Kind`]), `key` is that map's key as bytes
//! (parts joined by a NUL byte, numbers big-endian so that byte order is
//! number order), `ts` a number some maps expire by (0 when unused).

use std::fmt;

use whatsapp_rust::async_trait;

/// One stored row's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub value: Vec<u8>,
    pub ts: i64,
}

/// A change, applied with the others of its batch in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace one row.
    Put {
        kind: Kind,
        key: Vec<u8>,
        value: Vec<u8>,
        ts: i64,
    },
    /// Set the `ts` of one row if it exists; never inserts (a row removed
    /// meanwhile stays removed).
    SetTs { kind: Kind, key: Vec<u8>, ts: i64 },
    /// Remove one row (no error when it is missing).
    Delete { kind: Kind, key: Vec<u8> },
    /// Remove every row of `kind` whose key starts with `prefix` (all of the
    /// kind when `prefix` is empty).
    DeletePrefix { kind: Kind, prefix: Vec<u8> },
    /// Remove every row of `kind` with `0 < ts <= up_to`.
    DeleteExpired { kind: Kind, up_to: i64 },
}

impl Op {
    /// [`Op::Put`].
    pub fn put(kind: Kind, key: Vec<u8>, value: Vec<u8>, ts: i64) -> Op {
        Op::Put {
            kind,
            key,
            value,
            ts,
        }
    }
}

/// One account's session rows in the caller's store.
///
/// Contract: [`SessionRows::apply`] commits all of its ops atomically and
/// returns only once they are durable (the library relies on Signal state
/// it wrote surviving a crash); reads see every applied batch.
#[async_trait]
pub trait SessionRows: Send + Sync {
    /// The row at `(kind, key)`.
    async fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String>;
    /// The rows at `keys` of `kind`, in the order of `keys` (one read where
    /// the store can; this default asks one by one).
    async fn get_many(&self, kind: Kind, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Row>>, String> {
        let mut rows = Vec::with_capacity(keys.len());
        for key in &keys {
            rows.push(self.get(kind, key).await?);
        }
        Ok(rows)
    }
    /// The rows of `kind` whose key starts with `prefix`, in byte order of
    /// their keys.
    async fn scan(&self, kind: Kind, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Row)>, String>;
    /// Apply `ops` in order, in one transaction, durably. Returns how many
    /// rows the deletes removed.
    async fn apply(&self, ops: Vec<Op>) -> Result<u64, String>;
    /// Remove the row at `(kind, key)` and return it, atomically: of two
    /// takes of one row, one gets it.
    async fn take(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String>;
    /// Remove every row of the account (an unlinked or abandoned session).
    async fn clear(&self) -> Result<(), String>;
}

/// Which of the library's maps a row belongs to. The numbers are stored:
/// never reuse or renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The device itself (keys, ids, push name), at key `b"device"`.
    Device = 1,
    Identity = 2,
    Session = 3,
    /// `ts`: 1 once uploaded.
    PreKey = 4,
    SignedPreKey = 5,
    SenderKey = 6,
    SyncKey = 7,
    Version = 8,
    /// Key: collection name, NUL, index MAC.
    MutationMac = 9,
    /// Key: group, NUL, device. Value: one byte "has key".
    SenderKeyDevice = 10,
    /// Key: LID. `ts`: updated_at.
    LidMapping = 11,
    /// Key: phone, NUL, LID; the reverse index of `LidMapping`. `ts`:
    /// updated_at.
    PnIndex = 12,
    /// Key: address, NUL, message id.
    BaseKey = 13,
    DeviceList = 14,
    GroupMetadata = 15,
    TcToken = 16,
    /// Key: chat, NUL, message id. `ts`: stored at.
    SentMessage = 17,
    /// Key: chat, NUL, sender, NUL, id. `ts`: stored at.
    PendingInbound = 18,
    /// Key: chat, NUL, sender, NUL, message id. Value: the secret, then the
    /// parent message's time (8 bytes). `ts`: expires_at (0 = never).
    MsgSecret = 19,
}

impl Kind {
    /// Every kind, in number order.
    #[cfg(test)]
    const ALL: [Kind; 19] = [
        Kind::Device,
        Kind::Identity,
        Kind::Session,
        Kind::PreKey,
        Kind::SignedPreKey,
        Kind::SenderKey,
        Kind::SyncKey,
        Kind::Version,
        Kind::MutationMac,
        Kind::SenderKeyDevice,
        Kind::LidMapping,
        Kind::PnIndex,
        Kind::BaseKey,
        Kind::DeviceList,
        Kind::GroupMetadata,
        Kind::TcToken,
        Kind::SentMessage,
        Kind::PendingInbound,
        Kind::MsgSecret,
    ];

    /// The stored number.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The kind of a stored number.
    #[cfg(test)]
    fn from_code(code: i64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Parts of a key joined by NUL bytes (the parts are JIDs and ids, which
/// hold no NUL).
pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// The prefix of every key whose first parts are `parts`.
pub(crate) fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut prefix = key(parts);
    prefix.push(0);
    prefix
}

/// An in-memory [`SessionRows`], for this crate's tests and as the plainest
/// statement of the contract.
#[cfg(any(test, feature = "conformance"))]
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Rows by kind and key.
    type Map = BTreeMap<(Kind, Vec<u8>), Row>;

    /// Rows in a shared map: clones see the same rows, as two processes see
    /// one database.
    #[derive(Clone, Default)]
    pub struct MemoryRows {
        rows: Arc<Mutex<Map>>,
    }

    impl MemoryRows {
        /// Whether no row is stored.
        pub fn is_empty(&self) -> bool {
            crate::lock(&self.rows).is_empty()
        }
    }

    #[async_trait]
    impl SessionRows for MemoryRows {
        async fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String> {
            Ok(crate::lock(&self.rows).get(&(kind, key.to_vec())).cloned())
        }

        async fn scan(&self, kind: Kind, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Row)>, String> {
            Ok(crate::lock(&self.rows)
                .range((kind, prefix.to_vec())..)
                .take_while(|((k, key), _)| *k == kind && key.starts_with(prefix))
                .map(|((_, key), row)| (key.clone(), row.clone()))
                .collect())
        }

        async fn apply(&self, ops: Vec<Op>) -> Result<u64, String> {
            let mut rows = crate::lock(&self.rows);
            let mut removed = 0u64;
            for op in ops {
                match op {
                    Op::Put {
                        kind,
                        key,
                        value,
                        ts,
                    } => {
                        rows.insert((kind, key), Row { value, ts });
                    }
                    Op::SetTs { kind, key, ts } => {
                        if let Some(row) = rows.get_mut(&(kind, key)) {
                            row.ts = ts;
                        }
                    }
                    Op::Delete { kind, key } => {
                        removed += u64::from(rows.remove(&(kind, key)).is_some());
                    }
                    Op::DeletePrefix { kind, prefix } => {
                        let before = rows.len();
                        rows.retain(|(k, key), _| !(*k == kind && key.starts_with(&prefix)));
                        removed += (before - rows.len()) as u64;
                    }
                    Op::DeleteExpired { kind, up_to } => {
                        let before = rows.len();
                        rows.retain(|(k, _), row| !(*k == kind && row.ts > 0 && row.ts <= up_to));
                        removed += (before - rows.len()) as u64;
                    }
                }
            }
            Ok(removed)
        }

        async fn take(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String> {
            Ok(crate::lock(&self.rows).remove(&(kind, key.to_vec())))
        }

        async fn clear(&self) -> Result<(), String> {
            crate::lock(&self.rows).clear();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_stored_numbers() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind.code(), i as i64 + 1);
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Kind::from_code(20), None);
    }

    #[test]
    fn key_parts_are_joined_by_nul_and_a_prefix_ends_with_one() {
        assert_eq!(key(&[b"a", b"bc"]), b"a\0bc".to_vec());
        assert_eq!(prefix(&[b"a"]), b"a\0".to_vec());
        // "ab" is not under the prefix of "a".
        assert!(!key(&[b"ab", b"x"]).starts_with(&prefix(&[b"a"])));
    }
}
