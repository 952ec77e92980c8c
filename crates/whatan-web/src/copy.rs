//! Moving a linked session from the library's SQLite file into rows
//! (`whatan migrate --from-sqlite`, when whatan moves to PostgreSQL), so
//! that a linked account keeps its link.
//!
//! The file is read twice over: its tables, read-only, for what each map
//! holds (the library's trait has no "list every session"), and the
//! library's own store for the values that need decoding (the device, sync
//! keys, app-state versions, device lists, LID mappings, tc tokens, message
//! secrets). Everything is written through [`RowBackend`], so the rows are
//! exactly what a device running on them would have written.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{
    AppSyncStore, DeviceStore, MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore,
};
use whatsapp_rust_sqlite_storage::SqliteStore;

use crate::rows::{key, Kind, Op, SessionRows};
use crate::{RowBackend, WebError};

/// Copy the session file at `path` into `rows` (which should be empty).
/// Returns how many entries were copied; a file without a device copies
/// nothing.
pub async fn copy_file_session(path: &Path, rows: Arc<dyn SessionRows>) -> Result<u64, WebError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        WebError::Store(format!("copying {} ({what}): {e}", path.display()))
    };
    let from = SqliteStore::new(crate::session::store_url(path)?)
        .await
        .map_err(|e| failed("open", &e))?;
    let Some(device) = from.load().await.map_err(|e| failed("device", &e))? else {
        return Ok(0);
    };
    let listed = list(path, from.device_id()).map_err(|e| failed("tables", &e))?;
    let to = RowBackend::new(rows.clone());
    let mut copied = 0u64;
    let mut count = |n: usize| copied += n as u64;

    let wrote = |e: whatsapp_rust::wacore::store::error::StoreError| failed("write", &e);
    let read = |e: whatsapp_rust::wacore::store::error::StoreError| failed("read", &e);

    to.save(&device).await.map_err(wrote)?;
    count(1);

    // Maps whose values are stored as they are: written as read.
    let identities: Vec<(Arc<str>, [u8; 32])> = listed
        .identities
        .iter()
        .filter_map(|(address, key)| {
            Some((Arc::from(address.as_str()), key.as_slice().try_into().ok()?))
        })
        .collect();
    to.put_identities_batch(&identities).await.map_err(wrote)?;
    count(identities.len());
    let sessions: Vec<(Arc<str>, Bytes)> = listed
        .sessions
        .into_iter()
        .map(|(address, record)| (Arc::from(address), Bytes::from(record)))
        .collect();
    to.put_sessions_batch(&sessions).await.map_err(wrote)?;
    count(sessions.len());
    for (id, record, uploaded) in &listed.prekeys {
        to.store_prekey(*id, record, *uploaded)
            .await
            .map_err(wrote)?;
    }
    count(listed.prekeys.len());
    for (id, record) in &listed.signed_prekeys {
        to.store_signed_prekey(*id, record).await.map_err(wrote)?;
    }
    count(listed.signed_prekeys.len());
    let sender_keys: Vec<(Arc<str>, Bytes)> = listed
        .sender_keys
        .into_iter()
        .map(|(address, record)| (Arc::from(address), Bytes::from(record)))
        .collect();
    to.put_sender_keys_batch(&sender_keys)
        .await
        .map_err(wrote)?;
    count(sender_keys.len());
    for (name, index_mac, value_mac) in listed.mutation_macs {
        let mac = AppStateMutationMAC {
            index_mac,
            value_mac,
        };
        to.put_mutation_macs(&name, 0, &[mac])
            .await
            .map_err(wrote)?;
        count(1);
    }
    for (group, device_jid, has_key) in &listed.sender_key_devices {
        to.set_sender_key_status(group, &[(device_jid.as_str(), *has_key)])
            .await
            .map_err(wrote)?;
    }
    count(listed.sender_key_devices.len());
    for (address, message_id, base_key) in &listed.base_keys {
        to.save_base_key(address, message_id, base_key)
            .await
            .map_err(wrote)?;
    }
    count(listed.base_keys.len());
    for (group, blob) in &listed.group_metadata {
        to.put_group_metadata(group, blob).await.map_err(wrote)?;
    }
    count(listed.group_metadata.len());
    // Sent messages and pending inbound keep their times (they expire by
    // them).
    let mut timed = Vec::new();
    for (chat, id, payload, at) in listed.sent_messages {
        let key = key(&[chat.as_bytes(), id.as_bytes()]);
        timed.push(Op::put(Kind::SentMessage, key, payload, at));
    }
    for (chat, sender, id, message, at) in listed.pending_inbound {
        let key = key(&[chat.as_bytes(), sender.as_bytes(), id.as_bytes()]);
        timed.push(Op::put(Kind::PendingInbound, key, message, at));
    }
    count(timed.len());
    rows.apply(timed).await.map_err(|e| failed("write", &e))?;

    // Maps whose values the library decodes: read through its store.
    for key_id in &listed.sync_key_ids {
        if let Some(key) = from.get_sync_key(key_id).await.map_err(read)? {
            to.set_sync_key(key_id, key).await.map_err(wrote)?;
            count(1);
        }
    }
    for name in &listed.version_names {
        let state = from.get_version(name).await.map_err(read)?;
        to.set_version(name, state).await.map_err(wrote)?;
        count(1);
    }
    let mut device_lists = Vec::new();
    for user in &listed.device_list_users {
        if let Some(record) = from.get_devices(user).await.map_err(read)? {
            device_lists.push(record);
        }
    }
    count(device_lists.len());
    to.update_device_lists(device_lists).await.map_err(wrote)?;
    let mappings = from.get_all_lid_mappings().await.map_err(read)?;
    to.put_lid_mappings(&mappings).await.map_err(wrote)?;
    count(mappings.len());
    for jid in from.get_all_tc_token_jids().await.map_err(read)? {
        if let Some(entry) = from.get_tc_token(&jid).await.map_err(read)? {
            to.put_tc_token(&jid, &entry).await.map_err(wrote)?;
            count(1);
        }
    }
    let mut secrets = Vec::new();
    for (chat, sender, msg_id, expires_at) in &listed.msg_secrets {
        let found = from
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await
            .map_err(read)?;
        if let Some((secret, message_ts)) = found {
            let Ok(secret) = secret.as_slice().try_into() else {
                continue;
            };
            secrets.push(MsgSecretEntry {
                chat: Arc::from(chat.as_str()),
                sender: Arc::from(sender.as_str()),
                msg_id: Arc::from(msg_id.as_str()),
                secret,
                expires_at: *expires_at,
                message_ts,
            });
        }
    }
    count(secrets.len());
    to.put_msg_secrets(secrets).await.map_err(wrote)?;
    Ok(copied)
}

/// What the file's tables hold for one device.
#[derive(Default)]
struct Listed {
    identities: Vec<(String, Vec<u8>)>,
    sessions: Vec<(String, Vec<u8>)>,
    prekeys: Vec<(u32, Vec<u8>, bool)>,
    signed_prekeys: Vec<(u32, Vec<u8>)>,
    sender_keys: Vec<(String, Vec<u8>)>,
    mutation_macs: Vec<(String, Vec<u8>, Vec<u8>)>,
    sender_key_devices: Vec<(String, String, bool)>,
    base_keys: Vec<(String, String, Vec<u8>)>,
    group_metadata: Vec<(String, Vec<u8>)>,
    sent_messages: Vec<(String, String, Vec<u8>, i64)>,
    pending_inbound: Vec<(String, String, String, Vec<u8>, i64)>,
    sync_key_ids: Vec<Vec<u8>>,
    version_names: Vec<String>,
    device_list_users: Vec<String>,
    msg_secrets: Vec<(String, String, String, i64)>,
}

/// Read the file's tables (read-only) for `device_id`.
fn list(path: &Path, device_id: i32) -> rusqlite::Result<Listed> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let d = [device_id];
    let mut l = Listed::default();
    macro_rules! rows {
        ($sql:expr, $map:expr) => {{
            let mut stmt = c.prepare($sql)?;
            let rows = stmt.query_map(d, $map)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }};
    }
    l.identities = rows!(
        "SELECT address, key FROM identities WHERE device_id = ?1",
        |r| { Ok((r.get(0)?, r.get(1)?)) }
    );
    l.sessions = rows!(
        "SELECT address, record FROM sessions WHERE device_id = ?1",
        |r| { Ok((r.get(0)?, r.get(1)?)) }
    );
    l.prekeys = rows!(
        "SELECT id, key, uploaded FROM prekeys WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    );
    l.signed_prekeys = rows!(
        "SELECT id, record FROM signed_prekeys WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?))
    );
    l.sender_keys = rows!(
        "SELECT address, record FROM sender_keys WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?))
    );
    l.mutation_macs = rows!(
        "SELECT name, index_mac, value_mac FROM app_state_mutation_macs WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    );
    l.sender_key_devices = rows!(
        "SELECT group_jid, device_jid, has_key != 0 FROM sender_key_devices WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    );
    l.base_keys = rows!(
        "SELECT address, message_id, base_key FROM base_keys WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    );
    l.group_metadata = rows!(
        "SELECT group_jid, info FROM group_metadata WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?))
    );
    l.sent_messages = rows!(
        "SELECT chat_jid, message_id, payload, created_at FROM sent_messages WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    );
    l.pending_inbound = rows!(
        "SELECT chat, sender, id, message, inserted_at FROM pending_inbound_messages
         WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    );
    l.sync_key_ids = rows!(
        "SELECT key_id FROM app_state_keys WHERE device_id = ?1",
        |r| r.get(0)
    );
    l.version_names = rows!(
        "SELECT name FROM app_state_versions WHERE device_id = ?1",
        |r| r.get(0)
    );
    l.device_list_users = rows!(
        "SELECT user_id FROM device_registry WHERE device_id = ?1",
        |r| r.get(0)
    );
    l.msg_secrets = rows!(
        "SELECT chat, sender, msg_id, expires_at FROM msg_secrets WHERE device_id = ?1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    );
    Ok(l)
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::wacore::store::traits::{
        AppStateSyncKey, DeviceListRecord, LidPnMappingEntry, TcTokenEntry,
    };
    use whatsapp_rust::wacore::store::Device;

    use super::*;
    use crate::rows::memory::MemoryRows;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_file_moves_into_rows_entry_for_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc_1.db");
        let file = SqliteStore::new(path.to_str().unwrap()).await.unwrap();
        file.create().await.unwrap();
        let mut device = Device::new();
        device.pn = Some(whatsapp_rust::Jid::pn("917000000001"));
        device.push_name = "Ana".into();
        file.save(&device).await.unwrap();
        file.put_identity("1:2@s.whatsapp.net", [7; 32])
            .await
            .unwrap();
        file.put_session("1:2@s.whatsapp.net", b"ratchet")
            .await
            .unwrap();
        file.store_prekey(5, b"pk5", true).await.unwrap();
        file.store_prekey(6, b"pk6", false).await.unwrap();
        file.store_signed_prekey(1, b"spk").await.unwrap();
        file.put_sender_key("g@g.us::1:2", b"sk").await.unwrap();
        let sync_key = AppStateSyncKey {
            key_data: vec![3; 32],
            fingerprint: vec![1],
            timestamp: 9,
        };
        file.set_sync_key(b"k1", sync_key).await.unwrap();
        let mac = AppStateMutationMAC {
            index_mac: vec![1; 32],
            value_mac: vec![2; 32],
        };
        file.put_mutation_macs("regular", 3, &[mac]).await.unwrap();
        file.set_sender_key_status("g@g.us", &[("1:2@s.whatsapp.net", true)])
            .await
            .unwrap();
        file.put_lid_mapping(&LidPnMappingEntry {
            lid: "100".into(),
            phone_number: "917000000002".into(),
            created_at: 1,
            updated_at: 2,
            learning_source: "usync".into(),
        })
        .await
        .unwrap();
        file.save_base_key("1:2@s.whatsapp.net", "M1", b"base")
            .await
            .unwrap();
        file.update_device_list(DeviceListRecord {
            user: "917000000002".into(),
            devices: vec![],
            timestamp: 4,
            phash: Some("h".into()),
            raw_id: None,
        })
        .await
        .unwrap();
        file.put_group_metadata("g@g.us", b"meta").await.unwrap();
        let token = TcTokenEntry {
            token: b"tc".to_vec(),
            token_timestamp: 5,
            sender_timestamp: Some(6),
        };
        file.put_tc_token("100@lid", &token).await.unwrap();
        file.store_sent_message("c@s.whatsapp.net", "M2", b"payload")
            .await
            .unwrap();
        file.store_pending_inbound("c@s.whatsapp.net", "s", "M3", b"inbound")
            .await
            .unwrap();
        file.put_msg_secret("c@s.whatsapp.net", "s", "M4", &[9; 32])
            .await
            .unwrap();
        drop(file);

        let rows = MemoryRows::default();
        let copied = copy_file_session(&path, Arc::new(rows.clone()))
            .await
            .unwrap();

        let to = RowBackend::new(Arc::new(rows));
        let loaded = to.load().await.unwrap().unwrap();
        assert_eq!(loaded.pn, device.pn);
        assert_eq!(loaded.push_name, "Ana");
        assert_eq!(
            loaded.identity_key.public_key.public_key_bytes(),
            device.identity_key.public_key.public_key_bytes()
        );
        let id = "1:2@s.whatsapp.net";
        assert_eq!(to.load_identity(id).await.unwrap(), Some([7; 32]));
        assert_eq!(
            to.get_session(id).await.unwrap().as_deref(),
            Some(&b"ratchet"[..])
        );
        assert_eq!(to.get_max_prekey_id().await.unwrap(), 6);
        assert_eq!(
            to.load_prekey(5).await.unwrap().as_deref(),
            Some(&b"pk5"[..])
        );
        assert_eq!(
            to.load_signed_prekey(1).await.unwrap(),
            Some(b"spk".to_vec())
        );
        assert_eq!(
            to.get_sender_key("g@g.us::1:2").await.unwrap(),
            Some(b"sk".to_vec())
        );
        assert_eq!(to.get_sync_key(b"k1").await.unwrap().unwrap().timestamp, 9);
        assert_eq!(
            to.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
            Some(vec![2; 32])
        );
        assert_eq!(
            to.get_sender_key_devices("g@g.us").await.unwrap(),
            vec![(id.to_string(), true)]
        );
        assert_eq!(
            to.get_pn_mapping("917000000002")
                .await
                .unwrap()
                .unwrap()
                .lid,
            "100"
        );
        assert!(to.has_same_base_key(id, "M1", b"base").await.unwrap());
        let devices = to.get_devices("917000000002").await.unwrap().unwrap();
        assert_eq!(devices.phash.as_deref(), Some("h"));
        assert_eq!(
            to.get_group_metadata("g@g.us").await.unwrap(),
            Some(b"meta".to_vec())
        );
        assert_eq!(
            to.get_tc_token("100@lid")
                .await
                .unwrap()
                .unwrap()
                .sender_timestamp,
            Some(6)
        );
        assert_eq!(
            to.take_sent_message("c@s.whatsapp.net", "M2")
                .await
                .unwrap(),
            Some(b"payload".to_vec())
        );
        assert_eq!(
            to.get_pending_inbound("c@s.whatsapp.net", "s", "M3")
                .await
                .unwrap(),
            Some(b"inbound".to_vec())
        );
        assert_eq!(
            to.get_msg_secret("c@s.whatsapp.net", "s", "M4")
                .await
                .unwrap(),
            Some(vec![9; 32])
        );
        assert_eq!(copied, 18, "every entry, the device included");
    }

    #[tokio::test]
    async fn a_file_without_a_device_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc_1.db");
        drop(SqliteStore::new(path.to_str().unwrap()).await.unwrap());
        let rows = MemoryRows::default();
        assert_eq!(
            copy_file_session(&path, Arc::new(rows.clone()))
                .await
                .unwrap(),
            0
        );
        assert!(rows.is_empty());
    }
}
