//! The library's storage backend over [`SessionRows`]: every method of
//! whatsapp-rust's `Backend` as keyed reads and writes of one account's
//! rows. Each write is one [`SessionRows::apply`], durable before the method
//! returns, as the library's file store is.
//!
//! Semantics follow the library's file store (`whatsapp-rust-sqlite-storage`)
//! method by method; [`crate::conformance`] checks both with the same tests.
//! Marking prekeys uploaded and taking a sent message are single row
//! operations ([`Op::SetTs`], [`SessionRows::take`]), atomic in the store.
//! The other read-modify-writes (tc tokens, LID mappings, message secrets,
//! creating the device) run under this backend's write lock: a session has
//! one backend ([`crate::Session`] keeps it), and one account's session is
//! driven by one node at a time (whatan's leases).
//!
//! Structured values are JSON: it reads rows written by an older version of
//! a type with fields added since (they have serde defaults).

use std::collections::HashMap;
use std::sync::Arc;

use whatsapp_rust::async_trait;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::serde;
use whatsapp_rust::serde_json;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    merge_msg_secret_expiry, merge_msg_secret_message_ts, AppStateSyncKey, AppSyncStore,
    DeviceListRecord, DeviceStore, LidPnMappingEntry, MsgSecretEntry, MsgSecretStore,
    PendingInboundKey, PendingInboundRow, ProtocolStore, SignalStore, TcTokenEntry,
};
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::time::now_secs;

use crate::rows::{key, prefix, Kind, Op, Row, SessionRows};

/// The device row's key.
const DEVICE: &[u8] = b"device";
/// The message secret's length.
const SECRET_LEN: usize = 32;

/// whatsapp-rust's `Backend` on one account's [`SessionRows`].
pub struct RowBackend {
    rows: Arc<dyn SessionRows>,
    write_lock: tokio::sync::Mutex<()>,
}

impl RowBackend {
    pub fn new(rows: Arc<dyn SessionRows>) -> RowBackend {
        RowBackend {
            rows,
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The rows this backend reads and writes.
    pub fn rows(&self) -> Arc<dyn SessionRows> {
        self.rows.clone()
    }

    async fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>> {
        self.rows.get(kind, key).await.map_err(database)
    }

    async fn value(&self, kind: Kind, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(kind, key).await?.map(|row| row.value))
    }

    async fn scan(&self, kind: Kind, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Row)>> {
        self.rows.scan(kind, prefix).await.map_err(database)
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<u64> {
        if ops.is_empty() {
            return Ok(0);
        }
        self.rows.apply(ops).await.map_err(database)
    }

    /// Remove the rows of `kind` under `prefix`.
    async fn delete_prefix(&self, kind: Kind, prefix: Vec<u8>) -> Result<()> {
        let op = Op::DeletePrefix { kind, prefix };
        self.apply(vec![op]).await.map(drop)
    }

    /// Remove the rows of `kind` with `0 < ts <= up_to`; how many went.
    async fn expire(&self, kind: Kind, up_to: i64) -> Result<u32> {
        let removed = self.apply(vec![Op::DeleteExpired { kind, up_to }]).await?;
        Ok(removed as u32)
    }

    async fn put(&self, kind: Kind, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.apply(vec![Op::put(kind, key, value, 0)])
            .await
            .map(drop)
    }

    async fn delete(&self, kind: Kind, key: Vec<u8>) -> Result<()> {
        self.apply(vec![Op::Delete { kind, key }]).await.map(drop)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        key: &[u8],
    ) -> Result<Option<T>> {
        match self.value(kind, key).await? {
            Some(value) => decode(&value).map(Some),
            None => Ok(None),
        }
    }

    async fn put_json<T: serde::Serialize>(
        &self,
        kind: Kind,
        key: Vec<u8>,
        value: &T,
    ) -> Result<()> {
        self.put(kind, key, encode(value)?).await
    }
}

fn database(message: String) -> StoreError {
    StoreError::Database(message.into())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn text(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn prekey_key(id: u32) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn prekey_id(key: &[u8]) -> Result<u32> {
    <[u8; 4]>::try_from(key)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Validation(format!("a prekey id of {} bytes", key.len())))
}

fn msg_secret_key(chat: &str, sender: &str, msg_id: &str) -> Vec<u8> {
    key(&[chat.as_bytes(), sender.as_bytes(), msg_id.as_bytes()])
}

/// A message secret's stored value: the secret, then the parent message's
/// time.
fn msg_secret_value(secret: &[u8], message_ts: i64) -> Vec<u8> {
    let mut value = Vec::with_capacity(SECRET_LEN + 8);
    value.extend_from_slice(secret);
    value.extend_from_slice(&message_ts.to_be_bytes());
    value
}

fn msg_secret_parts(value: &[u8]) -> Result<(Vec<u8>, i64)> {
    if value.len() != SECRET_LEN + 8 {
        return Err(StoreError::Validation(format!(
            "a message secret row of {} bytes",
            value.len()
        )));
    }
    let (secret, ts) = value.split_at(SECRET_LEN);
    let ts = i64::from_be_bytes(ts.try_into().expect("8 bytes"));
    Ok((secret.to_vec(), ts))
}

/// Whether a Signal address (`user@server` or `user:device@server`) is one
/// of `user`'s.
fn address_of_user(address: &[u8], user: &str) -> bool {
    address
        .strip_prefix(user.as_bytes())
        .is_some_and(|rest| rest.starts_with(b"@") || rest.starts_with(b":"))
}

#[async_trait]
impl SignalStore for RowBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put(Kind::Identity, address.into(), key.to_vec()).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let ops = identities
            .iter()
            .map(|(address, key)| {
                Op::put(Kind::Identity, address.as_bytes().into(), key.to_vec(), 0)
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.value(Kind::Identity, address.as_bytes()).await? {
            Some(value) => <[u8; 32]>::try_from(value.as_slice())
                .map(Some)
                .map_err(|_| {
                    StoreError::Validation(format!("an identity of {} bytes", value.len()))
                }),
            None => Ok(None),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete(Kind::Identity, address.into()).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .value(Kind::Session, address.as_bytes())
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(Kind::Session, address.into(), session.to_vec())
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let ops = sessions
            .iter()
            .map(|(address, session)| {
                Op::put(
                    Kind::Session,
                    address.as_bytes().into(),
                    session.to_vec(),
                    0,
                )
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete(Kind::Session, address.into()).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        Ok(self.get(Kind::Session, address.as_bytes()).await?.is_some())
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        for kind in [Kind::Session, Kind::Identity] {
            let rows = self.scan(kind, user.as_bytes()).await?;
            if rows
                .iter()
                .any(|(address, _)| address_of_user(address, user))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        let op = Op::put(
            Kind::PreKey,
            prekey_key(id),
            record.to_vec(),
            i64::from(uploaded),
        );
        self.apply(vec![op]).await.map(drop)
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let ops = keys
            .iter()
            .map(|(id, record)| {
                Op::put(
                    Kind::PreKey,
                    prekey_key(*id),
                    record.to_vec(),
                    i64::from(uploaded),
                )
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .value(Kind::PreKey, &prekey_key(id))
            .await?
            .map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let keys = ids.iter().map(|id| prekey_key(*id)).collect();
        let found = self
            .rows
            .get_many(Kind::PreKey, keys)
            .await
            .map_err(database)?;
        let mut loaded = Vec::with_capacity(found.len());
        for (id, row) in ids.iter().zip(found) {
            if let Some(row) = row {
                loaded.push((*id, Bytes::from(row.value)));
            }
        }
        Ok(loaded)
    }

    /// Only rows still there: a key consumed meanwhile stays deleted.
    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        let ops = ids
            .iter()
            .map(|id| Op::SetTs {
                kind: Kind::PreKey,
                key: prekey_key(*id),
                ts: 1,
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.delete(Kind::PreKey, prekey_key(id)).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        match self.scan(Kind::PreKey, b"").await?.last() {
            Some((key, _)) => prekey_id(key),
            None => Ok(0),
        }
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put(Kind::SignedPreKey, prekey_key(id), record.to_vec())
            .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.value(Kind::SignedPreKey, &prekey_key(id)).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.scan(Kind::SignedPreKey, b"")
            .await?
            .into_iter()
            .map(|(key, row)| Ok((prekey_id(&key)?, row.value)))
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete(Kind::SignedPreKey, prekey_key(id)).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(Kind::SenderKey, address.into(), record.to_vec())
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let ops = sender_keys
            .iter()
            .map(|(address, record)| {
                Op::put(
                    Kind::SenderKey,
                    address.as_bytes().into(),
                    record.to_vec(),
                    0,
                )
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.value(Kind::SenderKey, address.as_bytes()).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete(Kind::SenderKey, address.into()).await
    }
}

#[async_trait]
impl AppSyncStore for RowBackend {
    /// A key that does not decode reads as absent, as in the file store.
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        Ok(self.json(Kind::SyncKey, key_id).await.unwrap_or(None))
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.put_json(Kind::SyncKey, key_id.to_vec(), &key).await
    }

    /// A collection never synced is at version 0 (the default state); so is
    /// one whose state does not decode, as in the file store (it syncs
    /// again from the start).
    async fn get_version(&self, name: &str) -> Result<HashState> {
        match self.value(Kind::Version, name.as_bytes()).await? {
            Some(value) => Ok(decode(&value).unwrap_or_default()),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put_json(Kind::Version, name.into(), &state).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let ops = mutations
            .iter()
            .map(|m| {
                let key = key(&[name.as_bytes(), &m.index_mac]);
                Op::put(Kind::MutationMac, key, m.value_mac.clone(), 0)
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.value(Kind::MutationMac, &key(&[name.as_bytes(), index_mac]))
            .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let keys = index_macs
            .iter()
            .map(|index| key(&[name.as_bytes(), index]))
            .collect();
        let found = self
            .rows
            .get_many(Kind::MutationMac, keys)
            .await
            .map_err(database)?;
        Ok(index_macs
            .iter()
            .zip(found)
            .filter_map(|(index, row)| Some((*index, row?.value)))
            .collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let ops = index_macs
            .iter()
            .map(|index| Op::Delete {
                kind: Kind::MutationMac,
                key: key(&[name.as_bytes(), index]),
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let prefix = prefix(&[name.as_bytes()]);
        self.delete_prefix(Kind::MutationMac, prefix).await
    }

    /// The greatest key id whose key decodes, as the file store answers.
    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        let keys = self.scan(Kind::SyncKey, b"").await?;
        Ok(keys
            .into_iter()
            .rev()
            .find(|(_, row)| decode::<AppStateSyncKey>(&row.value).is_ok())
            .map(|(key_id, _)| key_id))
    }
}

#[async_trait]
impl ProtocolStore for RowBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        let group = prefix(&[group_jid.as_bytes()]);
        self.scan(Kind::SenderKeyDevice, &group)
            .await?
            .into_iter()
            .map(|(key, row)| {
                let device = text(&key[group.len()..])?;
                Ok((device, row.value.first() == Some(&1)))
            })
            .collect()
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let ops = entries
            .iter()
            .map(|(device, has_key)| {
                let key = key(&[group_jid.as_bytes(), device.as_bytes()]);
                Op::put(Kind::SenderKeyDevice, key, vec![u8::from(*has_key)], 0)
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let prefix = prefix(&[group_jid.as_bytes()]);
        self.delete_prefix(Kind::SenderKeyDevice, prefix).await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let _write = self.write_lock.lock().await;
        let ops = self
            .scan(Kind::SenderKeyDevice, b"")
            .await?
            .into_iter()
            .filter(|(key, _)| {
                let device = key.splitn(2, |b| *b == 0).nth(1).unwrap_or_default();
                device_jids.iter().any(|jid| jid.as_bytes() == device)
            })
            .map(|(key, _)| Op::Delete {
                kind: Kind::SenderKeyDevice,
                key,
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.delete_prefix(Kind::SenderKeyDevice, Vec::new()).await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.json(Kind::LidMapping, lid.as_bytes()).await
    }

    /// The most recently updated LID of `phone`, as the file store answers.
    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let phone_prefix = prefix(&[phone.as_bytes()]);
        let index = self.scan(Kind::PnIndex, &phone_prefix).await?;
        let mut latest: Option<(i64, Vec<u8>)> = None;
        for (key, row) in index {
            if latest.as_ref().is_none_or(|(ts, _)| row.ts > *ts) {
                latest = Some((row.ts, key[phone_prefix.len()..].to_vec()));
            }
        }
        let Some((_, lid)) = latest else {
            return Ok(None);
        };
        // Read apart from the index: a mapping moved meanwhile is a miss.
        let mapping: Option<LidPnMappingEntry> = self.json(Kind::LidMapping, &lid).await?;
        Ok(mapping.filter(|m| m.phone_number == phone))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    /// An existing LID keeps its `created_at`; the phone index follows the
    /// phone.
    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        let _write = self.write_lock.lock().await;
        let mut staged: HashMap<&str, LidPnMappingEntry> = HashMap::new();
        let mut ops = Vec::new();
        for entry in entries {
            let existing = match staged.get(entry.lid.as_str()) {
                Some(staged) => Some(staged.clone()),
                None => self.get_lid_mapping(&entry.lid).await?,
            };
            let mut stored = entry.clone();
            if let Some(existing) = existing {
                stored.created_at = existing.created_at;
                ops.push(Op::Delete {
                    kind: Kind::PnIndex,
                    key: key(&[existing.phone_number.as_bytes(), existing.lid.as_bytes()]),
                });
            }
            ops.push(Op::put(
                Kind::LidMapping,
                stored.lid.as_bytes().into(),
                encode(&stored)?,
                stored.updated_at,
            ));
            ops.push(Op::put(
                Kind::PnIndex,
                key(&[stored.phone_number.as_bytes(), stored.lid.as_bytes()]),
                Vec::new(),
                stored.updated_at,
            ));
            staged.insert(entry.lid.as_str(), stored);
        }
        self.apply(ops).await.map(drop)
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.scan(Kind::LidMapping, b"")
            .await?
            .iter()
            .map(|(_, row)| decode(&row.value))
            .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        let key = key(&[address.as_bytes(), message_id.as_bytes()]);
        self.put(Kind::BaseKey, key, base_key.to_vec()).await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        let key = key(&[address.as_bytes(), message_id.as_bytes()]);
        Ok(self.value(Kind::BaseKey, &key).await?.as_deref() == Some(current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let key = key(&[address.as_bytes(), message_id.as_bytes()]);
        self.delete(Kind::BaseKey, key).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let ops = records
            .iter()
            .map(|record| {
                Ok(Op::put(
                    Kind::DeviceList,
                    record.user.as_bytes().into(),
                    encode(record)?,
                    0,
                ))
            })
            .collect::<Result<_>>()?;
        self.apply(ops).await.map(drop)
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.json(Kind::DeviceList, user.as_bytes()).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete(Kind::DeviceList, user.into()).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.value(Kind::GroupMetadata, group_jid.as_bytes()).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(Kind::GroupMetadata, group_jid.into(), blob.to_vec())
            .await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete(Kind::GroupMetadata, group_jid.into()).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.json(Kind::TcToken, jid.as_bytes()).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let _write = self.write_lock.lock().await;
        self.put_json(Kind::TcToken, jid.into(), entry).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let _write = self.write_lock.lock().await;
        self.delete(Kind::TcToken, jid.into()).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.scan(Kind::TcToken, b"")
            .await?
            .iter()
            .map(|(jid, _)| text(jid))
            .collect()
    }

    /// A row goes when its received token is expired or absent and its
    /// sender bucket is expired or absent (the file store's rule).
    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _write = self.write_lock.lock().await;
        let mut ops = Vec::new();
        for (jid, row) in self.scan(Kind::TcToken, b"").await? {
            let entry: TcTokenEntry = decode(&row.value)?;
            let token_stale = entry.token.is_empty() || entry.token_timestamp < token_cutoff;
            let sender_stale = entry.sender_timestamp.is_none_or(|ts| ts < sender_cutoff);
            if token_stale && sender_stale {
                ops.push(Op::Delete {
                    kind: Kind::TcToken,
                    key: jid,
                });
            }
        }
        Ok(self.apply(ops).await? as u32)
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let _write = self.write_lock.lock().await;
        let entry = match self.get_tc_token(jid).await? {
            Some(existing) => TcTokenEntry {
                sender_timestamp: Some(
                    existing
                        .sender_timestamp
                        .map_or(sender_timestamp, |e| e.max(sender_timestamp)),
                ),
                ..existing
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.put_json(Kind::TcToken, jid.into(), &entry).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let _write = self.write_lock.lock().await;
        let existing = self.get_tc_token(jid).await?;
        // A fresher real token stays; a placeholder never blocks a real one.
        if let Some(existing) = &existing {
            if !existing.token.is_empty() && token_timestamp < existing.token_timestamp {
                return Ok(());
            }
        }
        let entry = TcTokenEntry {
            token: token.to_vec(),
            token_timestamp,
            sender_timestamp: existing.and_then(|e| e.sender_timestamp),
        };
        self.put_json(Kind::TcToken, jid.into(), &entry).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let key = key(&[chat_jid.as_bytes(), message_id.as_bytes()]);
        self.apply(vec![Op::put(
            Kind::SentMessage,
            key,
            payload.to_vec(),
            now_secs(),
        )])
        .await
        .map(drop)
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let key = key(&[chat_jid.as_bytes(), message_id.as_bytes()]);
        let taken = self.rows.take(Kind::SentMessage, &key).await;
        Ok(taken.map_err(database)?.map(|row| row.value))
    }

    /// Older than the cutoff, strictly (the file store's rule).
    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.expire(Kind::SentMessage, cutoff_timestamp.saturating_sub(1))
            .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let key = key(&[chat.as_bytes(), sender.as_bytes(), id.as_bytes()]);
        self.apply(vec![Op::put(
            Kind::PendingInbound,
            key,
            message.to_vec(),
            now_secs(),
        )])
        .await
        .map(drop)
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = key(&[chat.as_bytes(), sender.as_bytes(), id.as_bytes()]);
        self.value(Kind::PendingInbound, &key).await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let key = key(&[chat.as_bytes(), sender.as_bytes(), id.as_bytes()]);
        self.delete(Kind::PendingInbound, key).await
    }

    /// Older than the cutoff, strictly (the file store's rule).
    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.expire(Kind::PendingInbound, cutoff_timestamp.saturating_sub(1))
            .await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        let now = now_secs();
        let ops = rows
            .iter()
            .map(|row| {
                let key = key(&[
                    row.chat.as_bytes(),
                    row.sender.as_bytes(),
                    row.id.as_bytes(),
                ]);
                Op::put(Kind::PendingInbound, key, row.message.to_vec(), now)
            })
            .collect();
        self.apply(ops).await.map(drop)
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        let ops = keys
            .iter()
            .map(|k| Op::Delete {
                kind: Kind::PendingInbound,
                key: key(&[k.chat.as_bytes(), k.sender.as_bytes(), k.id.as_bytes()]),
            })
            .collect();
        self.apply(ops).await.map(drop)
    }
}

#[async_trait]
impl MsgSecretStore for RowBackend {
    /// On a key already stored, the later deadline (0 = never) and the later
    /// parent time win, as in the file store.
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let _write = self.write_lock.lock().await;
        let keys: Vec<_> = entries
            .iter()
            .map(|e| msg_secret_key(&e.chat, &e.sender, &e.msg_id))
            .collect();
        let found = self
            .rows
            .get_many(Kind::MsgSecret, keys.clone())
            .await
            .map_err(database)?;
        let mut staged: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        let mut ops = Vec::with_capacity(entries.len());
        for ((entry, key), row) in entries.iter().zip(keys).zip(found) {
            let existing = match staged.get(&key) {
                Some(staged) => Some(*staged),
                None => match row {
                    Some(row) => Some((row.ts, msg_secret_parts(&row.value)?.1)),
                    None => None,
                },
            };
            let (expires_at, message_ts) = match existing {
                Some((expires_at, message_ts)) => (
                    merge_msg_secret_expiry(expires_at, entry.expires_at),
                    merge_msg_secret_message_ts(message_ts, entry.message_ts),
                ),
                None => (entry.expires_at, entry.message_ts),
            };
            staged.insert(key.clone(), (expires_at, message_ts));
            ops.push(Op::put(
                Kind::MsgSecret,
                key,
                msg_secret_value(&entry.secret, message_ts),
                expires_at,
            ));
        }
        let stored = ops.len();
        self.apply(ops).await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let key = msg_secret_key(chat, sender, msg_id);
        match self.value(Kind::MsgSecret, &key).await? {
            Some(value) => msg_secret_parts(&value).map(Some),
            None => Ok(None),
        }
    }

    /// Rows whose non-zero deadline is at or before the cutoff.
    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.expire(Kind::MsgSecret, cutoff_timestamp).await
    }
}

#[async_trait]
impl DeviceStore for RowBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        self.put_json(Kind::Device, DEVICE.to_vec(), device).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        self.json(Kind::Device, DEVICE).await
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get(Kind::Device, DEVICE).await?.is_some())
    }

    /// A new, unpaired device (fresh keys), saved at once as the file
    /// store does; like it, refused when there is a device already. One
    /// device per account: its id is always 1.
    async fn create(&self) -> Result<i32> {
        let _write = self.write_lock.lock().await;
        if self.exists().await? {
            return Err(StoreError::Validation(
                "the session has a device already".into(),
            ));
        }
        self.save(&Device::new()).await?;
        Ok(1)
    }
}
