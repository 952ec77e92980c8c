//! A conformance suite for whatsapp-rust's storage `Backend`: the behaviour
//! a linked session's store must have, checked through the trait methods
//! alone, so that every implementation is held to the same rules.
//!
//! The checks are ported from the tests of the library's own file store
//! (`whatsapp-rust-sqlite-storage` 0.7.0, `SqliteStore`: every test there
//! that goes through the trait rather than the store's internals), with more
//! from the tests of the library's in-memory backend
//! (`wacore::store::InMemoryBackend`), and durability checks on top: what
//! one backend wrote, a second backend opened on the same storage (as after
//! a restart) reads back unchanged.
//!
//! The expected behaviour is the file store's, read in its implementation:
//! where the in-memory backend disagrees, the check follows the file store
//! and says so in a comment.
//!
//! It runs in this crate against the file store and the row store, and in
//! whatan against its database: each implements [`Subject`] and calls
//! [`run`], which panics at the first failure with the check's name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use whatsapp_rust::async_trait;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::futures::future::join;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceInfo, DeviceListRecord, DeviceStore,
    LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow,
    ProtocolStore, SignalStore, TcTokenEntry,
};
use whatsapp_rust::wacore::store::{CachedNoiseCert, CachedServerCertChain, Device};
use whatsapp_rust::waproto::whatsapp::ADVSignedDeviceIdentity;
use whatsapp_rust::Jid;

/// What the suite runs against.
#[async_trait]
pub trait Subject: Send + Sync {
    /// The backend under test.
    type Backend: Backend + 'static;

    /// A backend on new, empty storage of its own.
    async fn fresh(&self) -> Self::Backend;

    /// A second backend on the same storage as `backend` (as after a
    /// restart); `backend` stays alive beside it.
    async fn reopen(&self, backend: &Self::Backend) -> Self::Backend;
}

/// Store a device in `rows` as pairing leaves it: linked to the phone
/// `phone_user` (digits), or, without one, a pairing that never finished.
/// For tests of code that loads sessions.
pub async fn seed_device(rows: Arc<dyn crate::SessionRows>, phone_user: Option<&str>) {
    let backend = crate::RowBackend::new(rows);
    let mut device = Device::new();
    device.pn = phone_user.map(Jid::pn);
    backend.save(&device).await.expect("seed a device");
}

/// [`seed_device`] for the library's session file at `path`.
pub async fn seed_file_device(path: &std::path::Path, phone_user: Option<&str>) {
    let file = whatsapp_rust_sqlite_storage::SqliteStore::new(path.to_str().expect("UTF-8"))
        .await
        .expect("open the session file");
    file.create().await.expect("create the device");
    let mut device = file.load().await.expect("load").expect("created");
    device.pn = phone_user.map(Jid::pn);
    file.save(&device).await.expect("seed a device");
}

/// The phone number (digits) of the device stored in `rows`, if one is
/// stored and linked.
pub async fn device_phone(rows: Arc<dyn crate::SessionRows>) -> Option<String> {
    let device = crate::RowBackend::new(rows).load().await.expect("load")?;
    device.pn.map(|jid| jid.user.to_string())
}

/// Every check, in order; panics (with the check's name) at the first failure.
pub async fn run<S: Subject>(subject: &S) {
    // SignalStore.
    identity_put_load_delete(&subject.fresh().await).await;
    session_put_get_has_delete(&subject.fresh().await).await;
    signal_state_for_user_matches_whole_user(&subject.fresh().await).await;
    prekey_store_load_remove_and_max_id(&subject.fresh().await).await;
    prekeys_batch_store_and_load(&subject.fresh().await).await;
    prekeys_mark_uploaded_never_resurrects(&subject.fresh().await).await;
    signed_prekeys_store_load_all_remove(&subject.fresh().await).await;
    sender_key_put_get_delete(&subject.fresh().await).await;
    signal_batches_persist_and_upsert(&subject.fresh().await).await;

    // AppSyncStore.
    sync_key_set_get_upsert(&subject.fresh().await).await;
    latest_sync_key_is_the_greatest_id(&subject.fresh().await).await;
    version_defaults_then_round_trips(&subject.fresh().await).await;
    mutation_macs_put_get_delete(&subject.fresh().await).await;
    batch_mutation_macs_match_per_item(&subject.fresh().await).await;
    clear_mutation_macs_wipes_only_named_collection(&subject.fresh().await).await;

    // ProtocolStore: sender key devices, LID mappings, base keys.
    sender_key_devices_set_get_upsert(&subject.fresh().await).await;
    sender_key_devices_clear_one_group(&subject.fresh().await).await;
    sender_key_device_rows_delete_across_groups_and_clear_all(&subject.fresh().await).await;
    lid_mapping_put_and_get_both_ways(&subject.fresh().await).await;
    lid_mapping_upsert_keeps_created_at_and_moves_phone(&subject.fresh().await).await;
    pn_mapping_is_the_most_recently_updated_lid(&subject.fresh().await).await;
    lid_mappings_batch_and_get_all(&subject.fresh().await).await;
    base_key_save_compare_delete(&subject.fresh().await).await;

    // ProtocolStore: device registry, group metadata.
    device_registry_save_and_get(&subject.fresh().await).await;
    device_registry_update_existing_and_delete(&subject.fresh().await).await;
    device_registry_batch_update(&subject.fresh().await).await;
    group_metadata_round_trip(&subject.fresh().await).await;

    // ProtocolStore: trusted contact tokens.
    tc_token_put_get_upsert_delete(&subject.fresh().await).await;
    tc_token_get_all_jids(&subject.fresh().await).await;
    tc_token_touch_creates_placeholder_and_only_advances(&subject.fresh().await).await;
    tc_token_touch_and_store_received_preserve_each_others_field(&subject.fresh().await).await;
    tc_token_store_received_is_newer_wins(&subject.fresh().await).await;
    tc_token_delete_expired_two_windows(&subject.fresh().await).await;

    // ProtocolStore: sent messages, pending inbound.
    sent_message_take_is_a_take(&subject.fresh().await).await;
    sent_messages_expire_strictly_older_than_cutoff(&subject.fresh().await).await;
    pending_inbound_store_get_delete(&subject.fresh().await).await;
    pending_inbound_batches(&subject.fresh().await).await;
    pending_inbound_expires_strictly_older_than_cutoff(&subject.fresh().await).await;

    // MsgSecretStore.
    msg_secret_round_trip_miss_and_overwrite(&subject.fresh().await).await;
    msg_secret_scoped_by_three_columns(&subject.fresh().await).await;
    msg_secret_batch_upserts_in_one_call(&subject.fresh().await).await;
    msg_secrets_delete_only_passed_deadlines(&subject.fresh().await).await;
    msg_secrets_keep_later_deadline_on_conflict(&subject.fresh().await).await;
    msg_secret_with_ts_keeps_parent_ts(&subject.fresh().await).await;

    // DeviceStore.
    device_absent_on_fresh_storage(&subject.fresh().await).await;
    device_create_then_save_and_load(&subject.fresh().await).await;
    device_prekey_watermarks_and_cert_chain_round_trip(&subject.fresh().await).await;

    // Durability: written through one backend, read through a second one.
    durable_signal_state(subject).await;
    durable_app_state(subject).await;
    durable_protocol_state(subject).await;
    durable_message_state(subject).await;
    durable_device(subject).await;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Unix seconds by this process's clock (the file store stamps rows with
/// SQLite's `strftime('%s', 'now')`, the same system clock).
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn jid(check: &str, text: &str) -> Jid {
    text.parse()
        .unwrap_or_else(|e| panic!("{check}: parse {text}: {e}"))
}

fn mac(index: u8, value: u8) -> AppStateMutationMAC {
    AppStateMutationMAC {
        index_mac: vec![index; 32],
        value_mac: vec![value; 32],
    }
}

/// A sync key. The file store reads back a key whose `key_data` is not 32
/// bytes (a real app-state master key's length) as absent, so every key
/// here has 32.
fn sync_key(byte: u8, timestamp: i64) -> AppStateSyncKey {
    AppStateSyncKey {
        key_data: vec![byte; 32],
        fingerprint: vec![byte, 1, 2, 3],
        timestamp,
    }
}

#[derive(Debug, PartialEq)]
struct SyncKeyView {
    key_data: Vec<u8>,
    fingerprint: Vec<u8>,
    timestamp: i64,
}

fn sync_key_view(key: &AppStateSyncKey) -> SyncKeyView {
    SyncKeyView {
        key_data: key.key_data.clone(),
        fingerprint: key.fingerprint.clone(),
        timestamp: key.timestamp,
    }
}

fn hash_state(version: u64, byte: u8) -> HashState {
    let mut index_value_map = HashMap::new();
    index_value_map.insert("index-a".to_string(), vec![byte, 1]);
    index_value_map.insert("index-b".to_string(), vec![byte, 2, 3]);
    HashState {
        version,
        hash: [byte; 128],
        index_value_map,
        mac_mismatch_fatal: true,
    }
}

#[derive(Debug, PartialEq)]
struct HashStateView {
    version: u64,
    hash: Vec<u8>,
    index_value_map: BTreeMap<String, Vec<u8>>,
    mac_mismatch_fatal: bool,
}

fn hash_state_view(state: &HashState) -> HashStateView {
    HashStateView {
        version: state.version,
        hash: state.hash.to_vec(),
        index_value_map: state
            .index_value_map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        mac_mismatch_fatal: state.mac_mismatch_fatal,
    }
}

fn lid_entry(lid: &str, phone: &str, created_at: i64, updated_at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_string(),
        phone_number: phone.to_string(),
        created_at,
        updated_at,
        learning_source: "usync".to_string(),
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LidView {
    lid: String,
    phone_number: String,
    created_at: i64,
    updated_at: i64,
    learning_source: String,
}

fn lid_view(entry: &LidPnMappingEntry) -> LidView {
    LidView {
        lid: entry.lid.clone(),
        phone_number: entry.phone_number.clone(),
        created_at: entry.created_at,
        updated_at: entry.updated_at,
        learning_source: entry.learning_source.clone(),
    }
}

#[derive(Debug, PartialEq)]
struct DeviceListView {
    user: String,
    /// `(device_id, key_index, is_hosted)`, in stored order.
    devices: Vec<(u32, Option<u32>, bool)>,
    timestamp: i64,
    phash: Option<String>,
    raw_id: Option<u32>,
}

fn device_list_view(record: &DeviceListRecord) -> DeviceListView {
    DeviceListView {
        user: record.user.clone(),
        devices: record
            .devices
            .iter()
            .map(|d| (d.device_id, d.key_index, d.is_hosted))
            .collect(),
        timestamp: record.timestamp,
        phash: record.phash.clone(),
        raw_id: record.raw_id,
    }
}

/// A device list. Timestamps stay below 2^31: the file store keeps them in
/// a 32-bit column.
fn device_list(user: &str, devices: Vec<DeviceInfo>, timestamp: i64) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_string(),
        devices,
        timestamp,
        phash: Some(format!("2:{user}")),
        raw_id: Some(7),
    }
}

fn tc_view(entry: &TcTokenEntry) -> (Vec<u8>, i64, Option<i64>) {
    (
        entry.token.clone(),
        entry.token_timestamp,
        entry.sender_timestamp,
    )
}

fn secret_entry(
    chat: &str,
    sender: &str,
    msg_id: &str,
    byte: u8,
    expires_at: i64,
    message_ts: i64,
) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: chat.into(),
        sender: sender.into(),
        msg_id: msg_id.into(),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

fn sample_cert_chain() -> CachedServerCertChain {
    CachedServerCertChain {
        intermediate: CachedNoiseCert {
            key: [0xAB; 32],
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        },
        leaf: CachedNoiseCert {
            key: [0xCD; 32],
            not_before: 1_700_000_500,
            not_after: 1_899_999_500,
        },
    }
}

/// A paired-looking device with every persisted field away from its default.
fn sample_device(check: &str) -> Device {
    let mut device = Device::new();
    device.pn = Some(jid(check, "15550001111:12@s.whatsapp.net"));
    device.lid = Some(jid(check, "100000012345678:12@lid"));
    device.signed_pre_key_id = 7;
    device.account = Some(Arc::new(
        ADVSignedDeviceIdentity::default()
            .with_details(vec![1u8; 40])
            .with_account_signature_key(vec![2u8; 32])
            .with_account_signature(vec![3u8; 64])
            .with_device_signature(vec![4u8; 64]),
    ));
    device.push_name = "Conformance".to_string();
    device.app_version_primary = 2;
    device.app_version_secondary = 3001;
    device.app_version_tertiary = 1_012_345_678;
    device.app_version_last_fetched_ms = 1_700_000_000_123;
    device.edge_routing_info = Some(vec![5u8; 12]);
    device.props_hash = Some("props-hash".to_string());
    device.next_pre_key_id = 913;
    device.first_unupload_pre_key_id = 101;
    device.server_has_prekeys = true;
    device.nct_salt = Some(vec![6u8; 16]);
    device.server_cert_chain = Some(sample_cert_chain());
    device.login_counter = 3;
    device.lid_migrated = true;
    device.last_signed_pre_key_rotation_ms = 1_700_000_000_456;
    device.read_receipts_disabled = true;
    device
}

/// A key pair as bytes: (private, public).
fn key_pair_bytes(key_pair: &KeyPair) -> (Vec<u8>, Vec<u8>) {
    (
        key_pair.private_key.serialize().to_vec(),
        key_pair.public_key.public_key_bytes().to_vec(),
    )
}

/// The fields of a [`Device`] that the file store persists. Not compared:
/// `device_props` and `client_profile` (rebuilt from the library's defaults
/// on load) and `nct_salt_sync_seen` (not persisted; false on load).
#[derive(Debug, PartialEq)]
struct DeviceView {
    pn: Option<String>,
    lid: Option<String>,
    registration_id: u32,
    noise_key: (Vec<u8>, Vec<u8>),
    identity_key: (Vec<u8>, Vec<u8>),
    signed_pre_key: (Vec<u8>, Vec<u8>),
    signed_pre_key_id: u32,
    signed_pre_key_signature: Vec<u8>,
    adv_secret_key: Vec<u8>,
    account: Option<ADVSignedDeviceIdentity>,
    push_name: String,
    app_version: (u32, u32, u32, i64),
    edge_routing_info: Option<Vec<u8>>,
    props_hash: Option<String>,
    next_pre_key_id: u32,
    first_unupload_pre_key_id: u32,
    server_has_prekeys: bool,
    nct_salt: Option<Vec<u8>>,
    server_cert_chain: Option<CachedServerCertChain>,
    login_counter: i32,
    lid_migrated: bool,
    last_signed_pre_key_rotation_ms: i64,
    read_receipts_disabled: bool,
}

fn device_view(device: &Device) -> DeviceView {
    DeviceView {
        pn: device.pn.as_ref().map(|j| j.to_string()),
        lid: device.lid.as_ref().map(|j| j.to_string()),
        registration_id: device.registration_id,
        noise_key: key_pair_bytes(&device.noise_key),
        identity_key: key_pair_bytes(&device.identity_key),
        signed_pre_key: key_pair_bytes(&device.signed_pre_key),
        signed_pre_key_id: device.signed_pre_key_id,
        signed_pre_key_signature: device.signed_pre_key_signature.to_vec(),
        adv_secret_key: device.adv_secret_key.to_vec(),
        account: device.account.as_deref().cloned(),
        push_name: device.push_name.clone(),
        app_version: (
            device.app_version_primary,
            device.app_version_secondary,
            device.app_version_tertiary,
            device.app_version_last_fetched_ms,
        ),
        edge_routing_info: device.edge_routing_info.clone(),
        props_hash: device.props_hash.clone(),
        next_pre_key_id: device.next_pre_key_id,
        first_unupload_pre_key_id: device.first_unupload_pre_key_id,
        server_has_prekeys: device.server_has_prekeys,
        nct_salt: device.nct_salt.clone(),
        server_cert_chain: device.server_cert_chain.clone(),
        login_counter: device.login_counter,
        lid_migrated: device.lid_migrated,
        last_signed_pre_key_rotation_ms: device.last_signed_pre_key_rotation_ms,
        read_receipts_disabled: device.read_receipts_disabled,
    }
}

// ---------------------------------------------------------------------------
// SignalStore
// ---------------------------------------------------------------------------

/// Identities: a missing address reads as `None`; put, overwrite, delete.
async fn identity_put_load_delete<B: Backend>(b: &B) {
    const C: &str = "identity_put_load_delete";
    let addr = "15550001111:3@s.whatsapp.net";
    let other = "15550001111:4@s.whatsapp.net";
    assert_eq!(b.load_identity(addr).await.expect(C), None, "{C}: missing");

    b.put_identity(addr, [1; 32]).await.expect(C);
    b.put_identity(other, [9; 32]).await.expect(C);
    assert_eq!(
        b.load_identity(addr).await.expect(C),
        Some([1; 32]),
        "{C}: stored"
    );

    b.put_identity(addr, [2; 32]).await.expect(C);
    assert_eq!(
        b.load_identity(addr).await.expect(C),
        Some([2; 32]),
        "{C}: a second put replaces the key"
    );

    b.delete_identity(addr).await.expect(C);
    assert_eq!(b.load_identity(addr).await.expect(C), None, "{C}: deleted");
    assert_eq!(
        b.load_identity(other).await.expect(C),
        Some([9; 32]),
        "{C}: another address is untouched"
    );
    // Deleting what is not there is not an error.
    b.delete_identity(addr).await.expect(C);
}

/// Sessions: get, has, overwrite, delete; another device is another address.
async fn session_put_get_has_delete<B: Backend>(b: &B) {
    const C: &str = "session_put_get_has_delete";
    let addr = "15550001111:3@s.whatsapp.net";
    assert!(
        b.get_session(addr).await.expect(C).is_none(),
        "{C}: missing"
    );
    assert!(
        !b.has_session(addr).await.expect(C),
        "{C}: has_session when missing"
    );

    b.put_session(addr, b"session-1").await.expect(C);
    assert_eq!(
        b.get_session(addr).await.expect(C).as_deref(),
        Some(&b"session-1"[..]),
        "{C}: stored"
    );
    assert!(
        b.has_session(addr).await.expect(C),
        "{C}: has_session when stored"
    );
    assert!(
        !b.has_session("15550001111:4@s.whatsapp.net")
            .await
            .expect(C),
        "{C}: another device of the same user has no session"
    );

    b.put_session(addr, b"session-2").await.expect(C);
    assert_eq!(
        b.get_session(addr).await.expect(C).as_deref(),
        Some(&b"session-2"[..]),
        "{C}: a second put replaces the session"
    );

    b.delete_session(addr).await.expect(C);
    assert!(
        b.get_session(addr).await.expect(C).is_none(),
        "{C}: deleted"
    );
    assert!(
        !b.has_session(addr).await.expect(C),
        "{C}: has_session after delete"
    );
    b.delete_session(addr).await.expect(C);
}

/// `has_signal_state_for_user`: a session or an identity of any device of
/// the user (`user@server` or `user:device@server`) counts; a user whose
/// number merely starts with this one does not. (The trait's default
/// answers `true` always; both library stores implement the real answer.)
async fn signal_state_for_user_matches_whole_user<B: Backend>(b: &B) {
    const C: &str = "signal_state_for_user_matches_whole_user";
    let user = "5511999990000";
    assert!(
        !b.has_signal_state_for_user(user).await.expect(C),
        "{C}: empty store"
    );

    // A longer number that starts with `user` must not match.
    b.put_session("55119999900001@s.whatsapp.net", b"sess")
        .await
        .expect(C);
    assert!(
        !b.has_signal_state_for_user(user).await.expect(C),
        "{C}: another user whose number starts with this one"
    );

    // Device 0 is keyed `user@server`.
    b.put_session("5511999990000@s.whatsapp.net", b"sess")
        .await
        .expect(C);
    assert!(
        b.has_signal_state_for_user(user).await.expect(C),
        "{C}: device 0 session"
    );
    b.delete_session("5511999990000@s.whatsapp.net")
        .await
        .expect(C);
    assert!(
        !b.has_signal_state_for_user(user).await.expect(C),
        "{C}: session deleted"
    );

    // Another device, `user:dev@server`, identity only, LID server.
    b.put_identity("5511999990000:5@lid", [7; 32])
        .await
        .expect(C);
    assert!(
        b.has_signal_state_for_user(user).await.expect(C),
        "{C}: identity of a companion device"
    );
    // A shorter number that this one starts with does not match either.
    assert!(
        !b.has_signal_state_for_user("551199999000").await.expect(C),
        "{C}: a prefix of the user"
    );
}

/// Single prekeys: store, load, overwrite, remove, and the greatest id.
async fn prekey_store_load_remove_and_max_id<B: Backend>(b: &B) {
    const C: &str = "prekey_store_load_remove_and_max_id";
    assert_eq!(
        b.get_max_prekey_id().await.expect(C),
        0,
        "{C}: no prekeys: 0"
    );
    assert!(b.load_prekey(1).await.expect(C).is_none(), "{C}: missing");

    b.store_prekey(1, b"record-1", false).await.expect(C);
    b.store_prekey(7, b"record-7", true).await.expect(C);
    b.store_prekey(3, b"record-3", false).await.expect(C);
    assert_eq!(
        b.load_prekey(1).await.expect(C).as_deref(),
        Some(&b"record-1"[..]),
        "{C}: stored"
    );
    assert_eq!(b.get_max_prekey_id().await.expect(C), 7, "{C}: max id");

    b.store_prekey(1, b"record-1b", true).await.expect(C);
    assert_eq!(
        b.load_prekey(1).await.expect(C).as_deref(),
        Some(&b"record-1b"[..]),
        "{C}: a second store replaces the record"
    );

    b.remove_prekey(7).await.expect(C);
    assert!(b.load_prekey(7).await.expect(C).is_none(), "{C}: removed");
    assert_eq!(
        b.get_max_prekey_id().await.expect(C),
        3,
        "{C}: max id after removing the greatest"
    );
    b.remove_prekey(99).await.expect(C);
}

/// Batched prekeys: a batch store, a batch load that returns only what
/// exists (in no promised order), upsert by batch, empty batches.
async fn prekeys_batch_store_and_load<B: Backend>(b: &B) {
    const C: &str = "prekeys_batch_store_and_load";
    let keys: Vec<(u32, Bytes)> = (10..20u32)
        .map(|id| (id, Bytes::from(vec![id as u8; 8])))
        .collect();
    b.store_prekeys_batch(&keys, false).await.expect(C);
    b.store_prekeys_batch(&[], true).await.expect(C);

    let loaded = sorted(b.load_prekeys_batch(&[9, 10, 15, 19, 20]).await.expect(C));
    assert_eq!(
        loaded,
        vec![
            (10, Bytes::from(vec![10u8; 8])),
            (15, Bytes::from(vec![15u8; 8])),
            (19, Bytes::from(vec![19u8; 8])),
        ],
        "{C}: only the stored ids come back"
    );
    assert!(
        b.load_prekeys_batch(&[]).await.expect(C).is_empty(),
        "{C}: an empty batch load"
    );
    assert_eq!(b.get_max_prekey_id().await.expect(C), 19, "{C}: max id");

    b.store_prekeys_batch(&[(10, Bytes::from_static(b"new"))], true)
        .await
        .expect(C);
    assert_eq!(
        b.load_prekey(10).await.expect(C).as_deref(),
        Some(&b"new"[..]),
        "{C}: a batch store replaces a stored record"
    );
    assert_eq!(
        b.load_prekey(11).await.expect(C),
        Some(Bytes::from(vec![11u8; 8])),
        "{C}: the rest are untouched"
    );
}

/// `mark_prekeys_uploaded` must be UPDATE-only: a prekey consumed (removed)
/// between the upload snapshot and the mark stays removed, and an id never
/// stored is not created. (File store test
/// `mark_prekeys_uploaded_never_resurrects_deleted_rows`.)
async fn prekeys_mark_uploaded_never_resurrects<B: Backend>(b: &B) {
    const C: &str = "prekeys_mark_uploaded_never_resurrects";
    b.store_prekey(1, b"record-1", false).await.expect(C);
    b.store_prekey(2, b"record-2", false).await.expect(C);
    b.remove_prekey(1).await.expect(C);

    b.mark_prekeys_uploaded(&[1, 2, 3]).await.expect(C);
    b.mark_prekeys_uploaded(&[]).await.expect(C);

    assert!(
        b.load_prekey(1).await.expect(C).is_none(),
        "{C}: a consumed key must not be resurrected"
    );
    assert!(
        b.load_prekey(3).await.expect(C).is_none(),
        "{C}: an id never stored must not be created"
    );
    assert_eq!(
        b.load_prekey(2).await.expect(C).as_deref(),
        Some(&b"record-2"[..]),
        "{C}: the live key keeps its record"
    );
    assert_eq!(b.get_max_prekey_id().await.expect(C), 2, "{C}: max id");
}

/// Signed prekeys: store, load one, load all, overwrite, remove.
async fn signed_prekeys_store_load_all_remove<B: Backend>(b: &B) {
    const C: &str = "signed_prekeys_store_load_all_remove";
    assert!(
        b.load_all_signed_prekeys().await.expect(C).is_empty(),
        "{C}: none at first"
    );
    b.store_signed_prekey(1, b"spk-1").await.expect(C);
    b.store_signed_prekey(2, b"spk-2").await.expect(C);
    assert_eq!(
        b.load_signed_prekey(1).await.expect(C),
        Some(b"spk-1".to_vec()),
        "{C}: stored"
    );
    assert_eq!(
        b.load_signed_prekey(9).await.expect(C),
        None,
        "{C}: missing"
    );
    assert_eq!(
        sorted(b.load_all_signed_prekeys().await.expect(C)),
        vec![(1, b"spk-1".to_vec()), (2, b"spk-2".to_vec())],
        "{C}: all"
    );

    b.store_signed_prekey(1, b"spk-1b").await.expect(C);
    b.remove_signed_prekey(2).await.expect(C);
    b.remove_signed_prekey(9).await.expect(C);
    assert_eq!(
        sorted(b.load_all_signed_prekeys().await.expect(C)),
        vec![(1, b"spk-1b".to_vec())],
        "{C}: after overwrite and remove"
    );
}

/// Sender keys: put, get, overwrite, delete.
async fn sender_key_put_get_delete<B: Backend>(b: &B) {
    const C: &str = "sender_key_put_get_delete";
    let addr = "120363000000000001@g.us::15550001111:3";
    assert_eq!(b.get_sender_key(addr).await.expect(C), None, "{C}: missing");
    b.put_sender_key(addr, b"sk-1").await.expect(C);
    assert_eq!(
        b.get_sender_key(addr).await.expect(C),
        Some(b"sk-1".to_vec()),
        "{C}: stored"
    );
    b.put_sender_key(addr, b"sk-2").await.expect(C);
    assert_eq!(
        b.get_sender_key(addr).await.expect(C),
        Some(b"sk-2".to_vec()),
        "{C}: a second put replaces the record"
    );
    b.delete_sender_key(addr).await.expect(C);
    assert_eq!(b.get_sender_key(addr).await.expect(C), None, "{C}: deleted");
    b.delete_sender_key(addr).await.expect(C);
}

/// The batch writers of sessions, identities and sender keys persist and
/// upsert; within one batch the last value for an address wins; empty
/// batches are fine. (File store test `put_signal_batches_persist_and_upsert`.)
async fn signal_batches_persist_and_upsert<B: Backend>(b: &B) {
    const C: &str = "signal_batches_persist_and_upsert";
    let sessions: Vec<(Arc<str>, Bytes)> = (0..5u8)
        .map(|i| {
            (
                Arc::from(format!("user{i}@s.whatsapp.net").as_str()),
                Bytes::from(vec![i; 8]),
            )
        })
        .collect();
    b.put_sessions_batch(&sessions).await.expect(C);
    for (addr, bytes) in &sessions {
        assert_eq!(
            b.get_session(addr).await.expect(C).as_deref(),
            Some(bytes.as_ref()),
            "{C}: batch session {addr}"
        );
    }

    let identities: Vec<(Arc<str>, [u8; 32])> = (0..5u8)
        .map(|i| {
            (
                Arc::from(format!("user{i}@s.whatsapp.net").as_str()),
                [i; 32],
            )
        })
        .collect();
    b.put_identities_batch(&identities).await.expect(C);
    for (addr, key) in &identities {
        assert_eq!(
            b.load_identity(addr).await.expect(C),
            Some(*key),
            "{C}: batch identity {addr}"
        );
    }

    let sender_keys: Vec<(Arc<str>, Bytes)> = (0..5u8)
        .map(|i| {
            (
                Arc::from(format!("g@g.us::user{i}").as_str()),
                Bytes::from(vec![i; 16]),
            )
        })
        .collect();
    b.put_sender_keys_batch(&sender_keys).await.expect(C);
    for (addr, bytes) in &sender_keys {
        assert_eq!(
            b.get_sender_key(addr).await.expect(C).as_deref(),
            Some(bytes.as_ref()),
            "{C}: batch sender key {addr}"
        );
    }

    // Re-batching the same addresses upserts.
    let updated: Vec<(Arc<str>, Bytes)> = sessions
        .iter()
        .map(|(addr, _)| (addr.clone(), Bytes::from(vec![0xAA; 8])))
        .collect();
    b.put_sessions_batch(&updated).await.expect(C);
    for (addr, _) in &sessions {
        assert_eq!(
            b.get_session(addr).await.expect(C).as_deref(),
            Some([0xAA; 8].as_slice()),
            "{C}: re-batched session {addr}"
        );
    }
    let updated_keys: Vec<(Arc<str>, Bytes)> = sender_keys
        .iter()
        .map(|(addr, _)| (addr.clone(), Bytes::from(vec![0xBB; 16])))
        .collect();
    b.put_sender_keys_batch(&updated_keys).await.expect(C);
    assert_eq!(
        b.get_sender_key("g@g.us::user0").await.expect(C),
        Some(vec![0xBB; 16]),
        "{C}: re-batched sender key"
    );
    let updated_identities = [(Arc::<str>::from("user0@s.whatsapp.net"), [0xCC; 32])];
    b.put_identities_batch(&updated_identities).await.expect(C);
    assert_eq!(
        b.load_identity("user0@s.whatsapp.net").await.expect(C),
        Some([0xCC; 32]),
        "{C}: re-batched identity"
    );

    // The same address twice in one batch: the last value wins.
    let dup: Arc<str> = Arc::from("dup@s.whatsapp.net");
    b.put_sessions_batch(&[
        (dup.clone(), Bytes::from(vec![1u8; 4])),
        (dup.clone(), Bytes::from(vec![2u8; 4])),
    ])
    .await
    .expect(C);
    assert_eq!(
        b.get_session(&dup).await.expect(C).as_deref(),
        Some([2u8; 4].as_slice()),
        "{C}: last value in a batch wins"
    );

    b.put_sessions_batch(&[]).await.expect(C);
    b.put_identities_batch(&[]).await.expect(C);
    b.put_sender_keys_batch(&[]).await.expect(C);
}

// ---------------------------------------------------------------------------
// AppSyncStore
// ---------------------------------------------------------------------------

/// Sync keys: missing reads `None`; set, get every field back, overwrite.
async fn sync_key_set_get_upsert<B: Backend>(b: &B) {
    const C: &str = "sync_key_set_get_upsert";
    let id = [0u8, 0, 0, 0, 0, 1];
    assert!(
        b.get_sync_key(&id).await.expect(C).is_none(),
        "{C}: missing"
    );

    b.set_sync_key(&id, sync_key(7, 1_700_000_000_000))
        .await
        .expect(C);
    let got = b.get_sync_key(&id).await.expect(C).expect(C);
    assert_eq!(
        sync_key_view(&got),
        sync_key_view(&sync_key(7, 1_700_000_000_000)),
        "{C}: stored"
    );

    b.set_sync_key(&id, sync_key(8, 1_700_000_000_001))
        .await
        .expect(C);
    let got = b.get_sync_key(&id).await.expect(C).expect(C);
    assert_eq!(
        sync_key_view(&got),
        sync_key_view(&sync_key(8, 1_700_000_000_001)),
        "{C}: a second set replaces the key"
    );
    assert!(
        b.get_sync_key(&[0, 0, 0, 0, 0, 2])
            .await
            .expect(C)
            .is_none(),
        "{C}: another id is still missing"
    );
}

/// The latest sync key is the one with the greatest id in byte order, not
/// the one written last: the file store selects `ORDER BY key_id DESC`.
/// (The in-memory backend answers the id written last; WhatsApp's key ids
/// grow, so the two agree in practice, and the file store's rule is kept.)
async fn latest_sync_key_is_the_greatest_id<B: Backend>(b: &B) {
    const C: &str = "latest_sync_key_is_the_greatest_id";
    assert_eq!(
        b.get_latest_sync_key_id().await.expect(C),
        None,
        "{C}: no keys"
    );

    let two = vec![0u8, 0, 0, 0, 0, 2];
    let one = vec![0u8, 0, 0, 0, 0, 1];
    let big = vec![0u8, 0, 0, 0, 1, 0];
    b.set_sync_key(&two, sync_key(2, 2)).await.expect(C);
    assert_eq!(
        b.get_latest_sync_key_id().await.expect(C),
        Some(two.clone()),
        "{C}: the only key"
    );
    b.set_sync_key(&one, sync_key(1, 3)).await.expect(C);
    assert_eq!(
        b.get_latest_sync_key_id().await.expect(C),
        Some(two),
        "{C}: a smaller id written later is not the latest (file store)"
    );
    b.set_sync_key(&big, sync_key(3, 4)).await.expect(C);
    assert_eq!(
        b.get_latest_sync_key_id().await.expect(C),
        Some(big),
        "{C}: a greater id"
    );
}

/// App-state versions: an unknown collection reads as `HashState::default()`;
/// set and get every field back; collections are independent.
async fn version_defaults_then_round_trips<B: Backend>(b: &B) {
    const C: &str = "version_defaults_then_round_trips";
    let default = b.get_version("regular_high").await.expect(C);
    assert_eq!(
        hash_state_view(&default),
        hash_state_view(&HashState::default()),
        "{C}: unknown collection"
    );

    b.set_version("regular_high", hash_state(42, 5))
        .await
        .expect(C);
    assert_eq!(
        hash_state_view(&b.get_version("regular_high").await.expect(C)),
        hash_state_view(&hash_state(42, 5)),
        "{C}: stored"
    );
    assert_eq!(
        hash_state_view(&b.get_version("critical_block").await.expect(C)),
        hash_state_view(&HashState::default()),
        "{C}: another collection is untouched"
    );

    b.set_version("regular_high", hash_state(43, 6))
        .await
        .expect(C);
    assert_eq!(
        hash_state_view(&b.get_version("regular_high").await.expect(C)),
        hash_state_view(&hash_state(43, 6)),
        "{C}: a second set replaces the state"
    );
}

/// Mutation MACs: put, get, upsert, delete by index; scoped by collection.
async fn mutation_macs_put_get_delete<B: Backend>(b: &B) {
    const C: &str = "mutation_macs_put_get_delete";
    b.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20)])
        .await
        .expect(C);
    b.put_mutation_macs("regular", 2, &[]).await.expect(C);
    assert_eq!(
        b.get_mutation_mac("regular", &[1; 32]).await.expect(C),
        Some(vec![10; 32]),
        "{C}: stored"
    );
    assert_eq!(
        b.get_mutation_mac("critical", &[1; 32]).await.expect(C),
        None,
        "{C}: scoped by collection"
    );
    assert_eq!(
        b.get_mutation_mac("regular", &[3; 32]).await.expect(C),
        None,
        "{C}: missing index"
    );

    b.put_mutation_macs("regular", 3, &[mac(1, 11)])
        .await
        .expect(C);
    assert_eq!(
        b.get_mutation_mac("regular", &[1; 32]).await.expect(C),
        Some(vec![11; 32]),
        "{C}: a later version replaces the value MAC"
    );

    b.delete_mutation_macs("regular", &[vec![1; 32], vec![9; 32]])
        .await
        .expect(C);
    b.delete_mutation_macs("regular", &[]).await.expect(C);
    assert_eq!(
        b.get_mutation_mac("regular", &[1; 32]).await.expect(C),
        None,
        "{C}: deleted"
    );
    assert_eq!(
        b.get_mutation_mac("regular", &[2; 32]).await.expect(C),
        Some(vec![20; 32]),
        "{C}: the other index is kept"
    );
}

/// The batch MAC lookup returns what the per-item lookup does, leaves out
/// what is not stored, and an empty lookup is empty. (File store test
/// `batch_mutation_macs_matches_per_item`.)
async fn batch_mutation_macs_match_per_item<B: Backend>(b: &B) {
    const C: &str = "batch_mutation_macs_match_per_item";
    let name = "regular";
    let macs: Vec<AppStateMutationMAC> = (0..25u8)
        .map(|i| {
            let mut index_mac = vec![0u8; 32];
            index_mac[0] = i;
            AppStateMutationMAC {
                index_mac,
                value_mac: vec![i; 32],
            }
        })
        .collect();
    b.put_mutation_macs(name, 1, &macs).await.expect(C);

    let mut index_macs: Vec<[u8; 32]> = macs
        .iter()
        .map(|m| m.index_mac.as_slice().try_into().expect(C))
        .collect();
    // An index that was never stored must be absent from the batch result.
    index_macs.push([0xFF; 32]);

    let batch = b.get_mutation_macs(name, &index_macs).await.expect(C);
    assert_eq!(batch.len(), macs.len(), "{C}: one entry per stored index");
    assert!(
        !batch.contains_key(&[0xFF; 32]),
        "{C}: unknown index left out"
    );
    for m in &macs {
        let key: [u8; 32] = m.index_mac.as_slice().try_into().expect(C);
        let per_item = b.get_mutation_mac(name, &m.index_mac).await.expect(C);
        assert_eq!(
            per_item.as_ref(),
            batch.get(&key),
            "{C}: parity with per item"
        );
        assert_eq!(batch.get(&key), Some(&m.value_mac), "{C}: value MAC");
    }
    assert!(
        b.get_mutation_macs("critical", &index_macs)
            .await
            .expect(C)
            .is_empty(),
        "{C}: another collection has none"
    );
    assert!(
        b.get_mutation_macs(name, &[]).await.expect(C).is_empty(),
        "{C}: empty lookup"
    );
}

/// Clearing one collection's MACs leaves the others. (Test of both stores.)
async fn clear_mutation_macs_wipes_only_named_collection<B: Backend>(b: &B) {
    const C: &str = "clear_mutation_macs_wipes_only_named_collection";
    b.put_mutation_macs("regular", 1, &[mac(1, 1), mac(3, 3)])
        .await
        .expect(C);
    b.put_mutation_macs("critical", 1, &[mac(2, 2)])
        .await
        .expect(C);

    b.clear_mutation_macs("regular").await.expect(C);
    b.clear_mutation_macs("never_synced").await.expect(C);

    assert!(
        b.get_mutation_mac("regular", &[1; 32])
            .await
            .expect(C)
            .is_none(),
        "{C}: cleared"
    );
    assert!(
        b.get_mutation_mac("regular", &[3; 32])
            .await
            .expect(C)
            .is_none(),
        "{C}: cleared"
    );
    assert_eq!(
        b.get_mutation_mac("critical", &[2; 32]).await.expect(C),
        Some(vec![2; 32]),
        "{C}: another collection is kept"
    );
}

// ---------------------------------------------------------------------------
// ProtocolStore: sender key devices, LID mappings, base keys
// ---------------------------------------------------------------------------

const GROUP_1: &str = "120363000000000001@g.us";
const GROUP_2: &str = "120363000000000002@g.us";
const DEVICE_1: &str = "100000000000001:5@lid";
const DEVICE_2: &str = "100000000000002:3@lid";
const DEVICE_3: &str = "100000000000003:0@lid";

/// Sender key status: set, get, upsert; groups are independent. (File store
/// tests `test_sender_key_devices_set_and_get`, `..._upsert_overwrites`,
/// `..._different_groups`.)
async fn sender_key_devices_set_get_upsert<B: Backend>(b: &B) {
    const C: &str = "sender_key_devices_set_get_upsert";
    assert!(
        b.get_sender_key_devices(GROUP_1).await.expect(C).is_empty(),
        "{C}: none at first"
    );
    b.set_sender_key_status(GROUP_1, &[(DEVICE_1, true), (DEVICE_2, false)])
        .await
        .expect(C);
    assert_eq!(
        sorted(b.get_sender_key_devices(GROUP_1).await.expect(C)),
        vec![(DEVICE_1.to_string(), true), (DEVICE_2.to_string(), false)],
        "{C}: stored"
    );

    // Marked as having the key after a successful SKDM.
    b.set_sender_key_status(GROUP_1, &[(DEVICE_2, true)])
        .await
        .expect(C);
    // And the other way: marked as needing a fresh SKDM.
    b.set_sender_key_status(GROUP_1, &[(DEVICE_1, false)])
        .await
        .expect(C);
    b.set_sender_key_status(GROUP_1, &[]).await.expect(C);
    assert_eq!(
        sorted(b.get_sender_key_devices(GROUP_1).await.expect(C)),
        vec![(DEVICE_1.to_string(), false), (DEVICE_2.to_string(), true)],
        "{C}: upserted"
    );
    assert!(
        b.get_sender_key_devices(GROUP_2).await.expect(C).is_empty(),
        "{C}: another group has none"
    );
}

/// Clearing one group's tracking leaves the other groups. (File store test
/// `test_sender_key_devices_clear`.)
async fn sender_key_devices_clear_one_group<B: Backend>(b: &B) {
    const C: &str = "sender_key_devices_clear_one_group";
    b.set_sender_key_status(GROUP_1, &[(DEVICE_1, true), (DEVICE_2, true)])
        .await
        .expect(C);
    b.set_sender_key_status(GROUP_2, &[(DEVICE_1, true)])
        .await
        .expect(C);
    b.clear_sender_key_devices(GROUP_1).await.expect(C);
    assert!(
        b.get_sender_key_devices(GROUP_1).await.expect(C).is_empty(),
        "{C}: cleared"
    );
    assert_eq!(
        b.get_sender_key_devices(GROUP_2).await.expect(C),
        vec![(DEVICE_1.to_string(), true)],
        "{C}: another group is kept"
    );
}

/// Deleting device rows removes those devices from every group and nothing
/// else; clearing all empties every group.
async fn sender_key_device_rows_delete_across_groups_and_clear_all<B: Backend>(b: &B) {
    const C: &str = "sender_key_device_rows_delete_across_groups_and_clear_all";
    b.set_sender_key_status(GROUP_1, &[(DEVICE_1, true), (DEVICE_2, false)])
        .await
        .expect(C);
    b.set_sender_key_status(GROUP_2, &[(DEVICE_1, false), (DEVICE_3, true)])
        .await
        .expect(C);

    b.delete_sender_key_device_rows(&[DEVICE_1]).await.expect(C);
    b.delete_sender_key_device_rows(&[]).await.expect(C);
    assert_eq!(
        b.get_sender_key_devices(GROUP_1).await.expect(C),
        vec![(DEVICE_2.to_string(), false)],
        "{C}: deleted from the first group"
    );
    assert_eq!(
        b.get_sender_key_devices(GROUP_2).await.expect(C),
        vec![(DEVICE_3.to_string(), true)],
        "{C}: deleted from the second group"
    );

    b.clear_all_sender_key_devices().await.expect(C);
    assert!(
        b.get_sender_key_devices(GROUP_1).await.expect(C).is_empty(),
        "{C}: clear all, first group"
    );
    assert!(
        b.get_sender_key_devices(GROUP_2).await.expect(C).is_empty(),
        "{C}: clear all, second group"
    );
}

/// LID mappings belong to the device: the file store's `lid_pn_mapping`
/// rows carry a foreign key to its device row, so it refuses a mapping
/// before `create()` (a session always has its device by then). The LID
/// checks create the device first.
async fn lid_mappings_need_a_device<B: Backend>(b: &B, check: &str) {
    b.create().await.expect(check);
}

/// A LID mapping reads back by LID and by phone number, every field intact.
async fn lid_mapping_put_and_get_both_ways<B: Backend>(b: &B) {
    const C: &str = "lid_mapping_put_and_get_both_ways";
    lid_mappings_need_a_device(b, C).await;
    let lid = "100000012345678";
    let phone = "15550001111";
    assert!(
        b.get_lid_mapping(lid).await.expect(C).is_none(),
        "{C}: missing lid"
    );
    assert!(
        b.get_pn_mapping(phone).await.expect(C).is_none(),
        "{C}: missing pn"
    );

    let mut entry = lid_entry(lid, phone, 1000, 1500);
    entry.learning_source = "peer_pn_message".to_string();
    b.put_lid_mapping(&entry).await.expect(C);
    let by_lid = b.get_lid_mapping(lid).await.expect(C).expect(C);
    assert_eq!(lid_view(&by_lid), lid_view(&entry), "{C}: by lid");
    let by_pn = b.get_pn_mapping(phone).await.expect(C).expect(C);
    assert_eq!(lid_view(&by_pn), lid_view(&entry), "{C}: by phone number");
    assert!(
        b.get_pn_mapping("15550002222").await.expect(C).is_none(),
        "{C}: another phone number"
    );
}

/// Writing a mapping for a known LID updates phone number, source and
/// `updated_at` but keeps the first `created_at` ("when the mapping was
/// first learned"): the file store's upsert does not touch `created_at`.
/// (The in-memory backend replaces the whole entry.) The old phone number
/// no longer maps to the LID.
async fn lid_mapping_upsert_keeps_created_at_and_moves_phone<B: Backend>(b: &B) {
    const C: &str = "lid_mapping_upsert_keeps_created_at_and_moves_phone";
    lid_mappings_need_a_device(b, C).await;
    let lid = "100000012345678";
    b.put_lid_mapping(&lid_entry(lid, "15550001111", 1000, 1000))
        .await
        .expect(C);
    let mut moved = lid_entry(lid, "15550002222", 5000, 2000);
    moved.learning_source = "peer_pn_message".to_string();
    b.put_lid_mapping(&moved).await.expect(C);

    let got = b.get_lid_mapping(lid).await.expect(C).expect(C);
    assert_eq!(
        lid_view(&got),
        LidView {
            lid: lid.to_string(),
            phone_number: "15550002222".to_string(),
            created_at: 1000,
            updated_at: 2000,
            learning_source: "peer_pn_message".to_string(),
        },
        "{C}: updated, first created_at kept (file store)"
    );
    assert!(
        b.get_pn_mapping("15550001111").await.expect(C).is_none(),
        "{C}: the old phone number no longer maps"
    );
    assert_eq!(
        b.get_pn_mapping("15550002222")
            .await
            .expect(C)
            .map(|e| e.lid),
        Some(lid.to_string()),
        "{C}: the new phone number maps"
    );
    assert_eq!(
        b.get_all_lid_mappings().await.expect(C).len(),
        1,
        "{C}: still one mapping"
    );
}

/// Two LIDs for one phone number: `get_pn_mapping` answers the one with the
/// greatest `updated_at` (the file store orders by `updated_at DESC`), not
/// the one written last (what the in-memory backend answers).
async fn pn_mapping_is_the_most_recently_updated_lid<B: Backend>(b: &B) {
    const C: &str = "pn_mapping_is_the_most_recently_updated_lid";
    lid_mappings_need_a_device(b, C).await;
    let phone = "15550001111";
    b.put_lid_mapping(&lid_entry("100000000000002", phone, 1000, 3000))
        .await
        .expect(C);
    b.put_lid_mapping(&lid_entry("100000000000001", phone, 1000, 2000))
        .await
        .expect(C);
    assert_eq!(
        b.get_pn_mapping(phone).await.expect(C).map(|e| e.lid),
        Some("100000000000002".to_string()),
        "{C}: the greater updated_at wins over the later write (file store)"
    );

    b.put_lid_mapping(&lid_entry("100000000000001", phone, 1000, 4000))
        .await
        .expect(C);
    assert_eq!(
        b.get_pn_mapping(phone).await.expect(C).map(|e| e.lid),
        Some("100000000000001".to_string()),
        "{C}: after an update with a greater updated_at"
    );
}

/// A batch of mappings is stored; `get_all_lid_mappings` returns them all.
async fn lid_mappings_batch_and_get_all<B: Backend>(b: &B) {
    const C: &str = "lid_mappings_batch_and_get_all";
    lid_mappings_need_a_device(b, C).await;
    assert!(
        b.get_all_lid_mappings().await.expect(C).is_empty(),
        "{C}: none"
    );
    b.put_lid_mappings(&[]).await.expect(C);
    let entries = vec![
        lid_entry("100000000000001", "15550000001", 10, 11),
        lid_entry("100000000000002", "15550000002", 20, 21),
        lid_entry("100000000000003", "15550000003", 30, 31),
    ];
    b.put_lid_mappings(&entries).await.expect(C);
    let all: Vec<LidView> = b
        .get_all_lid_mappings()
        .await
        .expect(C)
        .iter()
        .map(lid_view)
        .collect();
    assert_eq!(
        sorted(all),
        entries.iter().map(lid_view).collect::<Vec<_>>(),
        "{C}: all mappings"
    );
    for entry in &entries {
        let got = b
            .get_pn_mapping(&entry.phone_number)
            .await
            .expect(C)
            .expect(C);
        assert_eq!(lid_view(&got), lid_view(entry), "{C}: by phone number");
    }
}

/// Base keys: compare against the saved key of `(address, message id)`,
/// overwrite, delete.
async fn base_key_save_compare_delete<B: Backend>(b: &B) {
    const C: &str = "base_key_save_compare_delete";
    let addr = "15550001111:3@s.whatsapp.net";
    let msg = "3EB0AABBCCDDEEFF0011";
    assert!(
        !b.has_same_base_key(addr, msg, b"key-1").await.expect(C),
        "{C}: nothing saved"
    );
    b.save_base_key(addr, msg, b"key-1").await.expect(C);
    assert!(
        b.has_same_base_key(addr, msg, b"key-1").await.expect(C),
        "{C}: same"
    );
    assert!(
        !b.has_same_base_key(addr, msg, b"key-2").await.expect(C),
        "{C}: different key"
    );
    assert!(
        !b.has_same_base_key(addr, "OTHER", b"key-1").await.expect(C),
        "{C}: another message id"
    );
    assert!(
        !b.has_same_base_key("15550001111:4@s.whatsapp.net", msg, b"key-1")
            .await
            .expect(C),
        "{C}: another address"
    );

    b.save_base_key(addr, msg, b"key-2").await.expect(C);
    assert!(
        b.has_same_base_key(addr, msg, b"key-2").await.expect(C),
        "{C}: overwritten"
    );
    assert!(
        !b.has_same_base_key(addr, msg, b"key-1").await.expect(C),
        "{C}: the old key no longer matches"
    );

    b.delete_base_key(addr, msg).await.expect(C);
    assert!(
        !b.has_same_base_key(addr, msg, b"key-2").await.expect(C),
        "{C}: deleted"
    );
    b.delete_base_key(addr, msg).await.expect(C);
}

// ---------------------------------------------------------------------------
// ProtocolStore: device registry, group metadata
// ---------------------------------------------------------------------------

/// A device list reads back whole: devices in order with key index and
/// hosted flag, timestamp, phash, raw id. (File store tests
/// `test_device_registry_save_and_get`, `..._get_nonexistent`.)
async fn device_registry_save_and_get<B: Backend>(b: &B) {
    const C: &str = "device_registry_save_and_get";
    assert!(
        b.get_devices("nonexistent").await.expect(C).is_none(),
        "{C}: missing"
    );

    let record = DeviceListRecord {
        user: "1234567890".to_string(),
        devices: vec![
            DeviceInfo::new(0, None),
            DeviceInfo::new(1, Some(42)),
            DeviceInfo::new(2, Some(43)).with_hosting(true),
        ],
        timestamp: 1_234_567_890,
        phash: Some("2:abcdef".to_string()),
        raw_id: Some(123_456),
    };
    b.update_device_list(record.clone()).await.expect(C);
    let loaded = b.get_devices("1234567890").await.expect(C).expect(C);
    assert_eq!(
        device_list_view(&loaded),
        device_list_view(&record),
        "{C}: stored"
    );
}

/// A second list for the same user replaces the first, optional fields
/// included; delete drops it. (File store test
/// `test_device_registry_update_existing`.)
async fn device_registry_update_existing_and_delete<B: Backend>(b: &B) {
    const C: &str = "device_registry_update_existing_and_delete";
    let first = device_list("1234567890", vec![DeviceInfo::new(0, None)], 1000);
    b.update_device_list(first).await.expect(C);
    let other = device_list("1234567891", vec![DeviceInfo::new(0, None)], 1000);
    b.update_device_list(other.clone()).await.expect(C);

    let second = DeviceListRecord {
        user: "1234567890".to_string(),
        devices: vec![DeviceInfo::new(0, None), DeviceInfo::new(2, None)],
        timestamp: 2000,
        phash: None,
        raw_id: None,
    };
    b.update_device_list(second.clone()).await.expect(C);
    let loaded = b.get_devices("1234567890").await.expect(C).expect(C);
    assert_eq!(
        device_list_view(&loaded),
        device_list_view(&second),
        "{C}: replaced"
    );

    b.delete_devices("1234567890").await.expect(C);
    assert!(
        b.get_devices("1234567890").await.expect(C).is_none(),
        "{C}: deleted"
    );
    let kept = b.get_devices("1234567891").await.expect(C).expect(C);
    assert_eq!(
        device_list_view(&kept),
        device_list_view(&other),
        "{C}: other kept"
    );
    b.delete_devices("1234567890").await.expect(C);
}

/// The batch writer stores every list and upserts like the single one.
async fn device_registry_batch_update<B: Backend>(b: &B) {
    const C: &str = "device_registry_batch_update";
    b.update_device_lists(Vec::new()).await.expect(C);
    let records = vec![
        device_list("15550000001", vec![DeviceInfo::new(0, None)], 100),
        device_list("15550000002", vec![DeviceInfo::new(0, Some(1))], 200),
    ];
    b.update_device_lists(records.clone()).await.expect(C);
    for record in &records {
        let got = b.get_devices(&record.user).await.expect(C).expect(C);
        assert_eq!(
            device_list_view(&got),
            device_list_view(record),
            "{C}: stored"
        );
    }

    let replaced = device_list(
        "15550000001",
        vec![DeviceInfo::new(0, None), DeviceInfo::new(5, Some(9))],
        300,
    );
    b.update_device_lists(vec![replaced.clone()])
        .await
        .expect(C);
    let got = b.get_devices("15550000001").await.expect(C).expect(C);
    assert_eq!(
        device_list_view(&got),
        device_list_view(&replaced),
        "{C}: upserted"
    );
}

/// Group metadata: missing, stored, overwritten, deleted. (Test of both
/// stores.)
async fn group_metadata_round_trip<B: Backend>(b: &B) {
    const C: &str = "group_metadata_round_trip";
    let jid = "120363000000000001@g.us";
    assert!(
        b.get_group_metadata(jid).await.expect(C).is_none(),
        "{C}: missing"
    );

    b.put_group_metadata(jid, b"blob-v1").await.expect(C);
    assert_eq!(
        b.get_group_metadata(jid).await.expect(C).as_deref(),
        Some(&b"blob-v1"[..]),
        "{C}: stored"
    );
    b.put_group_metadata(jid, b"blob-v2").await.expect(C);
    assert_eq!(
        b.get_group_metadata(jid).await.expect(C).as_deref(),
        Some(&b"blob-v2"[..]),
        "{C}: overwritten"
    );
    assert!(
        b.get_group_metadata(GROUP_2).await.expect(C).is_none(),
        "{C}: another group"
    );

    // Delete drops the blob so the next query re-fetches in full.
    b.delete_group_metadata(jid).await.expect(C);
    assert!(
        b.get_group_metadata(jid).await.expect(C).is_none(),
        "{C}: deleted"
    );
    b.delete_group_metadata(jid).await.expect(C);
}

// ---------------------------------------------------------------------------
// ProtocolStore: trusted contact tokens
// ---------------------------------------------------------------------------

/// Tc tokens: missing, put and get every field, upsert, delete. (File store
/// tests `test_tc_token_put_and_get`, `..._upsert`, `..._delete`,
/// `..._get_nonexistent`.)
async fn tc_token_put_get_upsert_delete<B: Backend>(b: &B) {
    const C: &str = "tc_token_put_get_upsert_delete";
    assert!(
        b.get_tc_token("user@lid").await.expect(C).is_none(),
        "{C}: missing"
    );

    let entry = TcTokenEntry {
        token: vec![1, 2, 3, 4, 5],
        token_timestamp: 1_707_000_000,
        sender_timestamp: Some(1_707_000_100),
    };
    b.put_tc_token("user@lid", &entry).await.expect(C);
    let loaded = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(tc_view(&loaded), tc_view(&entry), "{C}: stored");

    let replaced = TcTokenEntry {
        token: vec![4, 5, 6],
        token_timestamp: 2000,
        sender_timestamp: None,
    };
    b.put_tc_token("user@lid", &replaced).await.expect(C);
    let loaded = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&loaded),
        tc_view(&replaced),
        "{C}: put replaces every field, sender_timestamp too"
    );

    b.delete_tc_token("user@lid").await.expect(C);
    assert!(
        b.get_tc_token("user@lid").await.expect(C).is_none(),
        "{C}: deleted"
    );
    b.delete_tc_token("user@lid").await.expect(C);
}

/// Every jid with a token is listed. (File store test
/// `test_tc_token_get_all_jids`.)
async fn tc_token_get_all_jids<B: Backend>(b: &B) {
    const C: &str = "tc_token_get_all_jids";
    assert!(
        b.get_all_tc_token_jids().await.expect(C).is_empty(),
        "{C}: none"
    );
    let entry = TcTokenEntry {
        token: vec![1],
        token_timestamp: 1000,
        sender_timestamp: None,
    };
    b.put_tc_token("user1@lid", &entry).await.expect(C);
    b.put_tc_token("user2@lid", &entry).await.expect(C);
    b.put_tc_token("user3@lid", &entry).await.expect(C);
    b.touch_tc_token_sender_timestamp("user4@lid", 1000)
        .await
        .expect(C);
    assert_eq!(
        sorted(b.get_all_tc_token_jids().await.expect(C)),
        vec!["user1@lid", "user2@lid", "user3@lid", "user4@lid"],
        "{C}: all, placeholders included"
    );
    b.delete_tc_token("user2@lid").await.expect(C);
    assert_eq!(
        sorted(b.get_all_tc_token_jids().await.expect(C)),
        vec!["user1@lid", "user3@lid", "user4@lid"],
        "{C}: after a delete"
    );
}

/// Touching the sender timestamp of an unknown contact inserts a byte-less
/// placeholder (`token_timestamp` = the sender timestamp); the sender
/// bucket only moves forward; a real token survives a touch.
async fn tc_token_touch_creates_placeholder_and_only_advances<B: Backend>(b: &B) {
    const C: &str = "tc_token_touch_creates_placeholder_and_only_advances";
    b.touch_tc_token_sender_timestamp("u@lid", 1000)
        .await
        .expect(C);
    let placeholder = b.get_tc_token("u@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&placeholder),
        (Vec::new(), 1000, Some(1000)),
        "{C}: placeholder"
    );

    b.touch_tc_token_sender_timestamp("u@lid", 3000)
        .await
        .expect(C);
    b.touch_tc_token_sender_timestamp("u@lid", 2000)
        .await
        .expect(C);
    let advanced = b.get_tc_token("u@lid").await.expect(C).expect(C);
    assert_eq!(
        advanced.sender_timestamp,
        Some(3000),
        "{C}: advanced, never regressed"
    );

    // A real token stored by the notification path survives a later touch.
    let real = TcTokenEntry {
        token: vec![7, 8, 9],
        token_timestamp: 2000,
        sender_timestamp: None,
    };
    b.put_tc_token("v@lid", &real).await.expect(C);
    b.touch_tc_token_sender_timestamp("v@lid", 500)
        .await
        .expect(C);
    let merged = b.get_tc_token("v@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&merged),
        (vec![7, 8, 9], 2000, Some(500)),
        "{C}: touch keeps the token and sets a missing sender bucket"
    );
}

/// The issuance path (touch) and the notification path (store received)
/// each own one field and never clobber the other's. (File store test
/// `test_touch_and_store_received_preserve_each_others_field`.)
async fn tc_token_touch_and_store_received_preserve_each_others_field<B: Backend>(b: &B) {
    const C: &str = "tc_token_touch_and_store_received_preserve_each_others_field";
    b.touch_tc_token_sender_timestamp("user@lid", 5000)
        .await
        .expect(C);
    b.store_received_tc_token("user@lid", &[7, 8, 9], 4000)
        .await
        .expect(C);
    let a = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&a),
        (vec![7, 8, 9], 4000, Some(5000)),
        "{C}: real token stored over the placeholder, sender bucket kept"
    );

    // A later touch advances only the sender bucket.
    b.touch_tc_token_sender_timestamp("user@lid", 6000)
        .await
        .expect(C);
    let c = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&c),
        (vec![7, 8, 9], 4000, Some(6000)),
        "{C}: touch must keep the real token"
    );

    // An older touch must not regress the sender bucket.
    b.touch_tc_token_sender_timestamp("user@lid", 1000)
        .await
        .expect(C);
    let d = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(d.sender_timestamp, Some(6000), "{C}: touch is advance-only");

    // A token received from an unknown contact has no sender bucket.
    b.store_received_tc_token("fresh@lid", &[9], 4000)
        .await
        .expect(C);
    let fresh = b.get_tc_token("fresh@lid").await.expect(C).expect(C);
    assert_eq!(tc_view(&fresh), (vec![9], 4000, None), "{C}: fresh token");
}

/// A received token overwrites the stored one only when at least as new, or
/// when the stored one is a byte-less placeholder. (Test of both stores.)
async fn tc_token_store_received_is_newer_wins<B: Backend>(b: &B) {
    const C: &str = "tc_token_store_received_is_newer_wins";
    b.store_received_tc_token("c@lid", &[1, 1, 1], 5000)
        .await
        .expect(C);

    // A stale write (older timestamp) must not clobber the fresher token.
    b.store_received_tc_token("c@lid", &[2, 2, 2], 3000)
        .await
        .expect(C);
    let e = b.get_tc_token("c@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&e),
        (vec![1, 1, 1], 5000, None),
        "{C}: older write ignored"
    );

    // A newer write wins, and so does one of the same time.
    b.store_received_tc_token("c@lid", &[3, 3, 3], 7000)
        .await
        .expect(C);
    let e = b.get_tc_token("c@lid").await.expect(C).expect(C);
    assert_eq!(tc_view(&e), (vec![3, 3, 3], 7000, None), "{C}: newer write");
    b.store_received_tc_token("c@lid", &[4, 4, 4], 7000)
        .await
        .expect(C);
    let e = b.get_tc_token("c@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&e),
        (vec![4, 4, 4], 7000, None),
        "{C}: same-time write"
    );

    // A byte-less placeholder never blocks the first real token, even when
    // that token's timestamp is older than the placeholder's sender epoch.
    b.touch_tc_token_sender_timestamp("p@lid", 9000)
        .await
        .expect(C);
    b.store_received_tc_token("p@lid", &[5, 5, 5], 6000)
        .await
        .expect(C);
    let e = b.get_tc_token("p@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&e),
        (vec![5, 5, 5], 6000, Some(9000)),
        "{C}: placeholder accepts the real token, sender bucket preserved"
    );
}

/// Pruning removes a row only when its received token is expired or absent
/// (`token_timestamp < token_cutoff`, or empty) AND its sender bucket is
/// expired or absent (`sender_timestamp < sender_cutoff`, or none); both
/// comparisons strict. (File store tests `test_delete_expired_two_window_
/// pruning`, `test_tc_token_delete_expired`; the in-memory backend's
/// `prune_respects_sender_and_token_windows`.)
async fn tc_token_delete_expired_two_windows<B: Backend>(b: &B) {
    const C: &str = "tc_token_delete_expired_two_windows";
    // token_cutoff = 1000, sender_cutoff = 2000.
    let entry =
        |token: Vec<u8>, token_timestamp: i64, sender_timestamp: Option<i64>| TcTokenEntry {
            token,
            token_timestamp,
            sender_timestamp,
        };
    // Recent placeholder: sender bucket live -> kept.
    b.touch_tc_token_sender_timestamp("recent_ph@lid", 2500)
        .await
        .expect(C);
    // Stale placeholder: both windows passed -> pruned.
    b.touch_tc_token_sender_timestamp("stale_ph@lid", 100)
        .await
        .expect(C);
    // Placeholder exactly at the sender cutoff -> kept.
    b.touch_tc_token_sender_timestamp("edge_ph@lid", 2000)
        .await
        .expect(C);
    // Expired received token but recent sender bucket -> kept.
    b.put_tc_token("expired_live_sender@lid", &entry(vec![1], 1, Some(2500)))
        .await
        .expect(C);
    // Expired token, no sender state -> pruned.
    b.put_tc_token("orphan_expired@lid", &entry(vec![2], 1, None))
        .await
        .expect(C);
    // Fresh received token -> kept.
    b.put_tc_token("fresh_tok@lid", &entry(vec![3], 5000, None))
        .await
        .expect(C);
    // Token exactly at the token cutoff -> kept.
    b.put_tc_token("edge_tok@lid", &entry(vec![4], 1000, None))
        .await
        .expect(C);

    let removed = b.delete_expired_tc_tokens(1000, 2000).await.expect(C);
    assert_eq!(removed, 2, "{C}: only fully stale rows are pruned");
    for (jid, kept) in [
        ("recent_ph@lid", true),
        ("stale_ph@lid", false),
        ("edge_ph@lid", true),
        ("expired_live_sender@lid", true),
        ("orphan_expired@lid", false),
        ("fresh_tok@lid", true),
        ("edge_tok@lid", true),
    ] {
        assert_eq!(
            b.get_tc_token(jid).await.expect(C).is_some(),
            kept,
            "{C}: {jid} kept = {kept}"
        );
    }
    assert_eq!(
        b.delete_expired_tc_tokens(1000, 2000).await.expect(C),
        0,
        "{C}: a second prune finds nothing"
    );

    // With both windows past everything, every row goes.
    assert_eq!(
        b.delete_expired_tc_tokens(6000, 6000).await.expect(C),
        5,
        "{C}: everything stale"
    );
    assert!(
        b.get_all_tc_token_jids().await.expect(C).is_empty(),
        "{C}: empty"
    );
}

// ---------------------------------------------------------------------------
// ProtocolStore: sent messages, pending inbound
// ---------------------------------------------------------------------------

/// `take_sent_message` returns the payload once and removes it; keyed by
/// chat and message id; a second store replaces; two concurrent takes get
/// it exactly once (the trait promises an atomic take).
async fn sent_message_take_is_a_take<B: Backend>(b: &B) {
    const C: &str = "sent_message_take_is_a_take";
    let chat = "15550001111@s.whatsapp.net";
    let other_chat = "120363000000000001@g.us";
    assert_eq!(
        b.take_sent_message(chat, "M1").await.expect(C),
        None,
        "{C}: missing"
    );

    b.store_sent_message(chat, "M1", b"payload-1")
        .await
        .expect(C);
    b.store_sent_message(other_chat, "M1", b"payload-other")
        .await
        .expect(C);
    assert_eq!(
        b.take_sent_message(chat, "M1").await.expect(C),
        Some(b"payload-1".to_vec()),
        "{C}: taken"
    );
    assert_eq!(
        b.take_sent_message(chat, "M1").await.expect(C),
        None,
        "{C}: a take removes it"
    );
    assert_eq!(
        b.take_sent_message(other_chat, "M1").await.expect(C),
        Some(b"payload-other".to_vec()),
        "{C}: the same id in another chat is another message"
    );

    b.store_sent_message(chat, "M2", b"first").await.expect(C);
    b.store_sent_message(chat, "M2", b"second").await.expect(C);
    assert_eq!(
        b.take_sent_message(chat, "M2").await.expect(C),
        Some(b"second".to_vec()),
        "{C}: a second store replaces the payload"
    );

    b.store_sent_message(chat, "M3", b"once").await.expect(C);
    let (x, y) = join(
        b.take_sent_message(chat, "M3"),
        b.take_sent_message(chat, "M3"),
    )
    .await;
    let taken = [x.expect(C), y.expect(C)];
    assert_eq!(
        taken.iter().filter(|t| t.is_some()).count(),
        1,
        "{C}: two concurrent takes: exactly one gets the payload"
    );
}

/// Expiry of sent messages removes those stored strictly before the cutoff
/// (file store: `created_at < cutoff`, stamped by the store at write time;
/// the in-memory backend keeps `timestamp >= cutoff`, the same rule).
///
/// The check at `cutoff = t0` assumes the backend stamps rows with a clock
/// that agrees with this process's to the second (both library stores and
/// the row store do).
async fn sent_messages_expire_strictly_older_than_cutoff<B: Backend>(b: &B) {
    const C: &str = "sent_messages_expire_strictly_older_than_cutoff";
    let chat = "15550001111@s.whatsapp.net";
    let t0 = now_secs();
    b.store_sent_message(chat, "M1", b"payload").await.expect(C);
    b.store_sent_message(chat, "M2", b"payload").await.expect(C);

    assert_eq!(
        b.delete_expired_sent_messages(t0 - 600).await.expect(C),
        0,
        "{C}: stored after the cutoff"
    );
    assert_eq!(
        b.delete_expired_sent_messages(t0).await.expect(C),
        0,
        "{C}: stored in the cutoff's second or later: not strictly older"
    );
    b.take_sent_message(chat, "M2").await.expect(C);

    let t1 = now_secs();
    assert_eq!(
        b.delete_expired_sent_messages(t1 + 600).await.expect(C),
        1,
        "{C}: stored before the cutoff"
    );
    assert_eq!(
        b.take_sent_message(chat, "M1").await.expect(C),
        None,
        "{C}: expired message is gone"
    );
}

/// The pending inbound buffer: store, read (not a take), scoped by
/// `(chat, sender, id)`, a second store replaces, delete.
async fn pending_inbound_store_get_delete<B: Backend>(b: &B) {
    const C: &str = "pending_inbound_store_get_delete";
    let (chat, sender, id) = (
        "120363000000000001@g.us",
        "15550001111@s.whatsapp.net",
        "ID1",
    );
    assert_eq!(
        b.get_pending_inbound(chat, sender, id).await.expect(C),
        None,
        "{C}: missing"
    );

    b.store_pending_inbound(chat, sender, id, b"m1")
        .await
        .expect(C);
    b.store_pending_inbound(chat, "15550002222@s.whatsapp.net", id, b"m2")
        .await
        .expect(C);
    b.store_pending_inbound("15550003333@s.whatsapp.net", sender, id, b"m3")
        .await
        .expect(C);
    b.store_pending_inbound(chat, sender, "ID2", b"m4")
        .await
        .expect(C);
    for _ in 0..2 {
        assert_eq!(
            b.get_pending_inbound(chat, sender, id).await.expect(C),
            Some(b"m1".to_vec()),
            "{C}: stored, and reading does not remove it"
        );
    }
    for (c, s, i, expected) in [
        (chat, "15550002222@s.whatsapp.net", id, b"m2"),
        ("15550003333@s.whatsapp.net", sender, id, b"m3"),
        (chat, sender, "ID2", b"m4"),
    ] {
        assert_eq!(
            b.get_pending_inbound(c, s, i).await.expect(C),
            Some(expected.to_vec()),
            "{C}: scoped by chat, sender and id: ({c}, {s}, {i})"
        );
    }

    b.store_pending_inbound(chat, sender, id, b"m1b")
        .await
        .expect(C);
    assert_eq!(
        b.get_pending_inbound(chat, sender, id).await.expect(C),
        Some(b"m1b".to_vec()),
        "{C}: a second store replaces the message"
    );

    b.delete_pending_inbound(chat, sender, id).await.expect(C);
    assert_eq!(
        b.get_pending_inbound(chat, sender, id).await.expect(C),
        None,
        "{C}: deleted"
    );
    assert_eq!(
        b.get_pending_inbound(chat, sender, "ID2").await.expect(C),
        Some(b"m4".to_vec()),
        "{C}: the others are kept"
    );
    b.delete_pending_inbound(chat, sender, id).await.expect(C);
}

/// The batch writers of the pending inbound buffer.
async fn pending_inbound_batches<B: Backend>(b: &B) {
    const C: &str = "pending_inbound_batches";
    b.store_pending_inbound_batch(&[]).await.expect(C);
    b.delete_pending_inbound_batch(&[]).await.expect(C);

    fn row(id: &'static str, message: &'static [u8]) -> PendingInboundRow<'static> {
        PendingInboundRow {
            chat: "chat@g.us",
            sender: "sender@lid",
            id,
            message,
        }
    }
    fn key(id: &'static str) -> PendingInboundKey<'static> {
        PendingInboundKey {
            chat: "chat@g.us",
            sender: "sender@lid",
            id,
        }
    }
    b.store_pending_inbound_batch(&[row("A", b"a"), row("B", b"b"), row("C", b"c")])
        .await
        .expect(C);
    for (id, message) in [("A", b"a"), ("B", b"b"), ("C", b"c")] {
        assert_eq!(
            b.get_pending_inbound("chat@g.us", "sender@lid", id)
                .await
                .expect(C),
            Some(message.to_vec()),
            "{C}: batch stored {id}"
        );
    }

    b.delete_pending_inbound_batch(&[key("A"), key("C"), key("missing")])
        .await
        .expect(C);
    for (id, kept) in [("A", false), ("B", true), ("C", false)] {
        assert_eq!(
            b.get_pending_inbound("chat@g.us", "sender@lid", id)
                .await
                .expect(C)
                .is_some(),
            kept,
            "{C}: after batch delete, {id} kept = {kept}"
        );
    }
}

/// Expiry of the pending inbound buffer removes rows stored strictly before
/// the cutoff (file store: `inserted_at < cutoff`; same clock caveat as the
/// sent messages' check).
async fn pending_inbound_expires_strictly_older_than_cutoff<B: Backend>(b: &B) {
    const C: &str = "pending_inbound_expires_strictly_older_than_cutoff";
    let t0 = now_secs();
    b.store_pending_inbound("chat@g.us", "sender@lid", "ID1", b"m")
        .await
        .expect(C);
    assert_eq!(
        b.delete_expired_pending_inbound(t0 - 600).await.expect(C),
        0,
        "{C}: stored after the cutoff"
    );
    assert_eq!(
        b.delete_expired_pending_inbound(t0).await.expect(C),
        0,
        "{C}: stored in the cutoff's second or later: not strictly older"
    );
    let t1 = now_secs();
    assert_eq!(
        b.delete_expired_pending_inbound(t1 + 600).await.expect(C),
        1,
        "{C}: stored before the cutoff"
    );
    assert_eq!(
        b.get_pending_inbound("chat@g.us", "sender@lid", "ID1")
            .await
            .expect(C),
        None,
        "{C}: expired row is gone"
    );
}

// ---------------------------------------------------------------------------
// MsgSecretStore
// ---------------------------------------------------------------------------

/// Message secrets: round trip, miss, overwrite. (File store tests
/// `msg_secret_round_trip_sqlite`, `msg_secret_miss_returns_none_sqlite`,
/// `msg_secret_upsert_replaces_secret`.)
async fn msg_secret_round_trip_miss_and_overwrite<B: Backend>(b: &B) {
    const C: &str = "msg_secret_round_trip_miss_and_overwrite";
    let (chat, sender) = ("12345@s.whatsapp.net", "9999@lid");
    assert!(
        b.get_msg_secret(chat, sender, "NOPE")
            .await
            .expect(C)
            .is_none(),
        "{C}: missing"
    );
    assert!(
        b.get_msg_secret_with_ts(chat, sender, "NOPE")
            .await
            .expect(C)
            .is_none(),
        "{C}: missing, with ts"
    );

    b.put_msg_secret(chat, sender, "MID1", &[0xAB; 32])
        .await
        .expect(C);
    assert_eq!(
        b.get_msg_secret(chat, sender, "MID1").await.expect(C),
        Some(vec![0xAB; 32]),
        "{C}: stored"
    );
    assert_eq!(
        b.get_msg_secret_with_ts(chat, sender, "MID1")
            .await
            .expect(C),
        Some((vec![0xAB; 32], 0)),
        "{C}: put_msg_secret leaves the parent time unknown (0)"
    );

    b.put_msg_secret(chat, sender, "MID1", &[9; 32])
        .await
        .expect(C);
    assert_eq!(
        b.get_msg_secret(chat, sender, "MID1").await.expect(C),
        Some(vec![9; 32]),
        "{C}: a second put replaces the secret"
    );
}

/// A secret is keyed by chat, sender and message id together. (Test of both
/// stores.)
async fn msg_secret_scoped_by_three_columns<B: Backend>(b: &B) {
    const C: &str = "msg_secret_scoped_by_three_columns";
    b.put_msg_secret("c1", "s1", "M1", &[1; 32]).await.expect(C);
    b.put_msg_secret("c1", "s1", "M2", &[2; 32]).await.expect(C);
    b.put_msg_secret("c1", "s2", "M1", &[3; 32]).await.expect(C);
    b.put_msg_secret("c2", "s1", "M1", &[4; 32]).await.expect(C);
    for (chat, sender, msg_id, expected) in [
        ("c1", "s1", "M1", 1u8),
        ("c1", "s1", "M2", 2),
        ("c1", "s2", "M1", 3),
        ("c2", "s1", "M1", 4),
    ] {
        assert_eq!(
            b.get_msg_secret(chat, sender, msg_id).await.expect(C),
            Some(vec![expected; 32]),
            "{C}: ({chat}, {sender}, {msg_id})"
        );
    }
    assert!(
        b.get_msg_secret("c2", "s2", "M1").await.expect(C).is_none(),
        "{C}: a combination never stored"
    );
}

/// A batch stores every entry and returns how many it was given; a key
/// repeated later in the batch overwrites the earlier one, across the file
/// store's 100-row statement boundary too and within a small batch; an
/// empty batch stores nothing. (File store test
/// `msg_secret_batch_upserts_in_one_call`; in-memory backend test
/// `msg_secret_batch_round_trip_and_overwrite`.)
async fn msg_secret_batch_upserts_in_one_call<B: Backend>(b: &B) {
    const C: &str = "msg_secret_batch_upserts_in_one_call";
    assert_eq!(
        b.put_msg_secrets(Vec::new()).await.expect(C),
        0,
        "{C}: empty"
    );

    let mut entries: Vec<MsgSecretEntry> = (0..=100)
        .map(|i| secret_entry("c", "s", &format!("M{i}"), 0x5A, 0, 0))
        .collect();
    entries.push(secret_entry("c", "s", "M0", 0xA5, 0, 0));
    let given = entries.len();
    assert_eq!(
        b.put_msg_secrets(entries).await.expect(C),
        given,
        "{C}: count of the entries given"
    );
    assert_eq!(
        b.get_msg_secret("c", "s", "M0").await.expect(C),
        Some(vec![0xA5; 32]),
        "{C}: the later entry for a key wins"
    );
    assert_eq!(
        b.get_msg_secret("c", "s", "M100").await.expect(C),
        Some(vec![0x5A; 32]),
        "{C}: the last distinct entry"
    );

    let small = vec![
        secret_entry("chat", "sender", "M1", 1, 0, 0),
        secret_entry("chat", "sender", "M2", 2, 0, 0),
        secret_entry("chat", "sender", "M1", 9, 0, 0),
    ];
    assert_eq!(
        b.put_msg_secrets(small).await.expect(C),
        3,
        "{C}: small batch"
    );
    assert_eq!(
        b.get_msg_secret("chat", "sender", "M1").await.expect(C),
        Some(vec![9; 32]),
        "{C}: repeated key in a small batch"
    );
    assert_eq!(
        b.get_msg_secret("chat", "sender", "M2").await.expect(C),
        Some(vec![2; 32]),
        "{C}: small batch, other key"
    );
}

/// Expiry deletes rows whose non-zero deadline is at or before the cutoff;
/// a 0 deadline never expires. (File store test
/// `delete_expired_msg_secrets_deletes_only_passed_deadlines`, with a fixed
/// "now" since deadlines are absolute.)
async fn msg_secrets_delete_only_passed_deadlines<B: Backend>(b: &B) {
    const C: &str = "msg_secrets_delete_only_passed_deadlines";
    let now = 1_700_000_000;
    b.put_msg_secrets(vec![
        secret_entry("c", "s", "NEVER", 1, 0, 0),
        secret_entry("c", "s", "FUTURE", 2, now + 86_400, 0),
        secret_entry("c", "s", "PAST", 3, now - 86_400, 0),
        secret_entry("c", "s", "AT_CUTOFF", 4, now, 0),
    ])
    .await
    .expect(C);

    assert_eq!(
        b.delete_expired_msg_secrets(now).await.expect(C),
        2,
        "{C}: the passed deadline and the one at the cutoff"
    );
    for (msg_id, kept) in [
        ("NEVER", true),
        ("FUTURE", true),
        ("PAST", false),
        ("AT_CUTOFF", false),
    ] {
        assert_eq!(
            b.get_msg_secret("c", "s", msg_id).await.expect(C).is_some(),
            kept,
            "{C}: {msg_id} kept = {kept}"
        );
    }
    assert_eq!(
        b.delete_expired_msg_secrets(now).await.expect(C),
        0,
        "{C}: a second sweep finds nothing"
    );
}

/// On a key conflict the later deadline is kept (a window never shrinks),
/// and a 0 ("never") deadline wins over any finite one. (File store test
/// `put_msg_secrets_keeps_later_deadline_on_conflict`, with a fixed "now".)
async fn msg_secrets_keep_later_deadline_on_conflict<B: Backend>(b: &B) {
    const C: &str = "msg_secrets_keep_later_deadline_on_conflict";
    let now = 1_700_000_000;
    let day = 86_400;
    b.put_msg_secrets(vec![secret_entry("c", "s", "M", 1, now + 90 * day, 0)])
        .await
        .expect(C);
    b.put_msg_secrets(vec![secret_entry("c", "s", "M", 1, now + 30 * day, 0)])
        .await
        .expect(C);
    assert_eq!(
        b.delete_expired_msg_secrets(now + 60 * day).await.expect(C),
        0,
        "{C}: the conflict kept the later (90 day) deadline"
    );

    // A later deadline on conflict extends the window.
    b.put_msg_secrets(vec![secret_entry("c", "s", "L", 1, now + 10 * day, 0)])
        .await
        .expect(C);
    b.put_msg_secrets(vec![secret_entry("c", "s", "L", 1, now + 20 * day, 0)])
        .await
        .expect(C);
    assert_eq!(
        b.delete_expired_msg_secrets(now + 15 * day).await.expect(C),
        0,
        "{C}: the conflict took the later (20 day) deadline"
    );

    // A never-expire (0) write overrides any finite deadline...
    b.put_msg_secret("c", "s", "M", &[1; 32]).await.expect(C);
    // ...and a finite write does not shorten a never-expire row.
    b.put_msg_secrets(vec![secret_entry("c", "s", "M", 1, now + day, 0)])
        .await
        .expect(C);
    assert_eq!(
        b.delete_expired_msg_secrets(now + 200 * day)
            .await
            .expect(C),
        1,
        "{C}: only L expires; M's 0 (never) deadline wins"
    );
    assert!(
        b.get_msg_secret("c", "s", "M").await.expect(C).is_some(),
        "{C}: M never expires"
    );
}

/// The secret comes back with the parent message's time; a redelivery with
/// an unknown time (0) keeps the known one; a later known time wins.
/// (File store test `get_msg_secret_with_ts_round_trips_and_keeps_parent_ts`.)
async fn msg_secret_with_ts_keeps_parent_ts<B: Backend>(b: &B) {
    const C: &str = "msg_secret_with_ts_keeps_parent_ts";
    let parent_ts = 1_700_000_000i64;
    b.put_msg_secrets(vec![secret_entry("c", "s", "M", 5, 0, parent_ts)])
        .await
        .expect(C);
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "M").await.expect(C),
        Some((vec![5; 32], parent_ts)),
        "{C}: stored"
    );

    b.put_msg_secret("c", "s", "M", &[5; 32]).await.expect(C);
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "M").await.expect(C),
        Some((vec![5; 32], parent_ts)),
        "{C}: a 0-ts redelivery keeps the parent time"
    );

    b.put_msg_secrets(vec![secret_entry("c", "s", "M", 6, 0, parent_ts + 10)])
        .await
        .expect(C);
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "M").await.expect(C),
        Some((vec![6; 32], parent_ts + 10)),
        "{C}: the later known parent time wins"
    );
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "MISSING")
            .await
            .expect(C),
        None,
        "{C}: absent row"
    );
}

// ---------------------------------------------------------------------------
// DeviceStore
// ---------------------------------------------------------------------------

/// On new storage there is no device.
async fn device_absent_on_fresh_storage<B: Backend>(b: &B) {
    const C: &str = "device_absent_on_fresh_storage";
    assert!(!b.exists().await.expect(C), "{C}: exists");
    assert!(b.load().await.expect(C).is_none(), "{C}: load");
}

/// `create` makes a device exist, not yet paired (no phone number or LID);
/// `save` then `load` gives back every persisted field. (A second `create`
/// is not checked: the file store refuses it, the in-memory backend does
/// not.)
async fn device_create_then_save_and_load<B: Backend>(b: &B) {
    const C: &str = "device_create_then_save_and_load";
    b.create().await.expect(C);
    assert!(b.exists().await.expect(C), "{C}: exists after create");
    let created = b.load().await.expect(C).expect(C);
    assert!(
        created.pn.is_none() && created.lid.is_none(),
        "{C}: a created device is not paired"
    );

    let device = sample_device(C);
    b.save(&device).await.expect(C);
    assert!(b.exists().await.expect(C), "{C}: exists after save");
    let loaded = b.load().await.expect(C).expect(C);
    assert_eq!(device_view(&loaded), device_view(&device), "{C}: loaded");
}

/// The prekey watermarks and the cached server certificate chain survive a
/// save and a load; a cleared chain loads as `None`. (File store tests
/// `test_prekey_watermarks_survive_save_load_roundtrip` and
/// `test_server_cert_chain_survives_save_load_roundtrip`, through the trait.)
async fn device_prekey_watermarks_and_cert_chain_round_trip<B: Backend>(b: &B) {
    const C: &str = "device_prekey_watermarks_and_cert_chain_round_trip";
    b.create().await.expect(C);
    let mut device = b.load().await.expect(C).expect(C);
    assert_eq!(
        device.first_unupload_pre_key_id, 0,
        "{C}: a created device starts with the watermark unset"
    );
    assert!(device.server_cert_chain.is_none(), "{C}: and no cert chain");

    device.next_pre_key_id = 913;
    device.first_unupload_pre_key_id = 101;
    device.server_cert_chain = Some(sample_cert_chain());
    b.save(&device).await.expect(C);
    let loaded = b.load().await.expect(C).expect(C);
    assert_eq!(loaded.next_pre_key_id, 913, "{C}: next_pre_key_id");
    assert_eq!(
        loaded.first_unupload_pre_key_id, 101,
        "{C}: first_unupload_pre_key_id"
    );
    assert_eq!(
        loaded.server_cert_chain.as_ref(),
        Some(&sample_cert_chain()),
        "{C}: server_cert_chain"
    );

    let mut device = loaded;
    device.server_cert_chain = None;
    b.save(&device).await.expect(C);
    let reloaded = b.load().await.expect(C).expect(C);
    assert!(
        reloaded.server_cert_chain.is_none(),
        "{C}: a cleared chain loads as None"
    );
    assert_eq!(
        device_view(&reloaded),
        device_view(&device),
        "{C}: the rest"
    );
}

// ---------------------------------------------------------------------------
// Durability: written through one backend, read through a second one
// ---------------------------------------------------------------------------

/// Identities, sessions, prekeys, signed prekeys and sender keys survive a
/// reopen, and so do their deletions. (Whether a prekey is marked uploaded
/// cannot be read through the trait, so only the records are compared.)
async fn durable_signal_state<S: Subject>(subject: &S) {
    const C: &str = "durable_signal_state";
    let addr = "15550001111:3@s.whatsapp.net";
    let gone = "15550002222:1@s.whatsapp.net";
    let sender_key_addr = "120363000000000001@g.us::15550001111:3";

    let a = subject.fresh().await;
    a.put_identity(addr, [9; 32]).await.expect(C);
    a.put_identity(gone, [8; 32]).await.expect(C);
    a.delete_identity(gone).await.expect(C);
    a.put_session(addr, b"session").await.expect(C);
    a.put_session(gone, b"gone").await.expect(C);
    a.delete_session(gone).await.expect(C);
    a.store_prekey(1, b"pk-1", false).await.expect(C);
    a.store_prekeys_batch(
        &[
            (2, Bytes::from_static(b"pk-2")),
            (3, Bytes::from_static(b"pk-3")),
        ],
        true,
    )
    .await
    .expect(C);
    a.mark_prekeys_uploaded(&[1]).await.expect(C);
    a.remove_prekey(3).await.expect(C);
    a.store_signed_prekey(5, b"spk-5").await.expect(C);
    a.store_signed_prekey(6, b"spk-6").await.expect(C);
    a.remove_signed_prekey(6).await.expect(C);
    a.put_sender_key(sender_key_addr, b"sender-key")
        .await
        .expect(C);

    let b = subject.reopen(&a).await;
    assert_eq!(
        b.load_identity(addr).await.expect(C),
        Some([9; 32]),
        "{C}: identity"
    );
    assert_eq!(
        b.load_identity(gone).await.expect(C),
        None,
        "{C}: deleted identity"
    );
    assert_eq!(
        b.get_session(addr).await.expect(C).as_deref(),
        Some(&b"session"[..]),
        "{C}: session"
    );
    assert!(b.has_session(addr).await.expect(C), "{C}: has_session");
    assert!(
        b.get_session(gone).await.expect(C).is_none(),
        "{C}: deleted session"
    );
    assert!(
        b.has_signal_state_for_user("15550001111").await.expect(C),
        "{C}: signal state for the user"
    );
    assert!(
        !b.has_signal_state_for_user("15550002222").await.expect(C),
        "{C}: no signal state for the deleted user"
    );
    assert_eq!(
        sorted(b.load_prekeys_batch(&[1, 2, 3]).await.expect(C)),
        vec![
            (1, Bytes::from_static(b"pk-1")),
            (2, Bytes::from_static(b"pk-2")),
        ],
        "{C}: prekeys"
    );
    assert_eq!(
        b.get_max_prekey_id().await.expect(C),
        2,
        "{C}: max prekey id"
    );
    assert_eq!(
        b.load_all_signed_prekeys().await.expect(C),
        vec![(5, b"spk-5".to_vec())],
        "{C}: signed prekeys"
    );
    assert_eq!(
        b.get_sender_key(sender_key_addr).await.expect(C),
        Some(b"sender-key".to_vec()),
        "{C}: sender key"
    );
}

/// Sync keys, versions and mutation MACs survive a reopen.
async fn durable_app_state<S: Subject>(subject: &S) {
    const C: &str = "durable_app_state";
    let key_1 = [0u8, 0, 0, 0, 0, 1];
    let key_2 = [0u8, 0, 0, 0, 0, 2];

    let a = subject.fresh().await;
    a.set_sync_key(&key_1, sync_key(1, 1_700_000_000_001))
        .await
        .expect(C);
    a.set_sync_key(&key_2, sync_key(2, 1_700_000_000_002))
        .await
        .expect(C);
    a.set_version("regular", hash_state(17, 4)).await.expect(C);
    a.put_mutation_macs("regular", 17, &[mac(1, 10), mac(2, 20), mac(3, 30)])
        .await
        .expect(C);
    a.delete_mutation_macs("regular", &[vec![3; 32]])
        .await
        .expect(C);

    let b = subject.reopen(&a).await;
    for (id, byte, timestamp) in [(key_1, 1, 1_700_000_000_001), (key_2, 2, 1_700_000_000_002)] {
        let got = b.get_sync_key(&id).await.expect(C).expect(C);
        assert_eq!(
            sync_key_view(&got),
            sync_key_view(&sync_key(byte, timestamp)),
            "{C}: sync key {id:?}"
        );
    }
    assert_eq!(
        b.get_latest_sync_key_id().await.expect(C),
        Some(key_2.to_vec()),
        "{C}: latest sync key id"
    );
    assert_eq!(
        hash_state_view(&b.get_version("regular").await.expect(C)),
        hash_state_view(&hash_state(17, 4)),
        "{C}: version"
    );
    let macs = b
        .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
        .await
        .expect(C);
    assert_eq!(
        macs.into_iter().collect::<BTreeMap<_, _>>(),
        BTreeMap::from([([1; 32], vec![10; 32]), ([2; 32], vec![20; 32])]),
        "{C}: mutation MACs"
    );
}

/// Sender key devices, LID mappings, base keys, device lists, group
/// metadata and tc tokens survive a reopen.
async fn durable_protocol_state<S: Subject>(subject: &S) {
    const C: &str = "durable_protocol_state";
    let lid_1 = lid_entry("100000000000001", "15550000001", 10, 11);
    let mut lid_2 = lid_entry("100000000000002", "15550000002", 20, 21);
    lid_2.learning_source = "peer_pn_message".to_string();
    let list = DeviceListRecord {
        user: "15550000001".to_string(),
        devices: vec![
            DeviceInfo::new(0, None),
            DeviceInfo::new(3, Some(8)).with_hosting(true),
        ],
        timestamp: 1_700_000_000,
        phash: Some("2:xyz".to_string()),
        raw_id: Some(99),
    };
    let token = TcTokenEntry {
        token: vec![1, 2, 3],
        token_timestamp: 1_707_000_000,
        sender_timestamp: Some(1_707_000_100),
    };

    let a = subject.fresh().await;
    lid_mappings_need_a_device(&a, C).await;
    a.set_sender_key_status(GROUP_1, &[(DEVICE_1, true), (DEVICE_2, false)])
        .await
        .expect(C);
    a.put_lid_mappings(&[lid_1.clone(), lid_2.clone()])
        .await
        .expect(C);
    a.save_base_key("15550001111:3@s.whatsapp.net", "MSG", b"base")
        .await
        .expect(C);
    a.update_device_list(list.clone()).await.expect(C);
    a.put_group_metadata(GROUP_1, b"group-blob").await.expect(C);
    a.put_tc_token("user@lid", &token).await.expect(C);
    a.touch_tc_token_sender_timestamp("placeholder@lid", 1_707_000_200)
        .await
        .expect(C);

    let b = subject.reopen(&a).await;
    assert_eq!(
        sorted(b.get_sender_key_devices(GROUP_1).await.expect(C)),
        vec![(DEVICE_1.to_string(), true), (DEVICE_2.to_string(), false)],
        "{C}: sender key devices"
    );
    let all: Vec<LidView> = b
        .get_all_lid_mappings()
        .await
        .expect(C)
        .iter()
        .map(lid_view)
        .collect();
    assert_eq!(
        sorted(all),
        vec![lid_view(&lid_1), lid_view(&lid_2)],
        "{C}: lid mappings"
    );
    let by_pn = b.get_pn_mapping("15550000002").await.expect(C).expect(C);
    assert_eq!(lid_view(&by_pn), lid_view(&lid_2), "{C}: pn mapping");
    assert!(
        b.has_same_base_key("15550001111:3@s.whatsapp.net", "MSG", b"base")
            .await
            .expect(C),
        "{C}: base key"
    );
    let got = b.get_devices("15550000001").await.expect(C).expect(C);
    assert_eq!(
        device_list_view(&got),
        device_list_view(&list),
        "{C}: device list"
    );
    assert_eq!(
        b.get_group_metadata(GROUP_1).await.expect(C),
        Some(b"group-blob".to_vec()),
        "{C}: group metadata"
    );
    let got = b.get_tc_token("user@lid").await.expect(C).expect(C);
    assert_eq!(tc_view(&got), tc_view(&token), "{C}: tc token");
    let got = b.get_tc_token("placeholder@lid").await.expect(C).expect(C);
    assert_eq!(
        tc_view(&got),
        (Vec::new(), 1_707_000_200, Some(1_707_000_200)),
        "{C}: tc token placeholder"
    );
}

/// Sent messages, the pending inbound buffer and message secrets survive a
/// reopen, with the times their expiry goes by.
async fn durable_message_state<S: Subject>(subject: &S) {
    const C: &str = "durable_message_state";
    let chat = "15550001111@s.whatsapp.net";
    let deadline = 1_800_000_000;
    let t0 = now_secs();

    let a = subject.fresh().await;
    a.store_sent_message(chat, "M1", b"sent-1").await.expect(C);
    a.store_sent_message(chat, "M2", b"sent-2").await.expect(C);
    a.take_sent_message(chat, "M2").await.expect(C);
    a.store_pending_inbound(chat, "sender@lid", "P1", b"pending-1")
        .await
        .expect(C);
    a.store_pending_inbound(chat, "sender@lid", "P2", b"pending-2")
        .await
        .expect(C);
    a.delete_pending_inbound(chat, "sender@lid", "P2")
        .await
        .expect(C);
    a.put_msg_secrets(vec![
        secret_entry(chat, "sender@lid", "S1", 1, deadline, 1_700_000_000),
        secret_entry(chat, "sender@lid", "S2", 2, 0, 0),
    ])
    .await
    .expect(C);

    let b = subject.reopen(&a).await;
    // Their write times were kept: not reset to the epoch.
    assert_eq!(
        b.delete_expired_sent_messages(t0 - 600).await.expect(C),
        0,
        "{C}: sent message's time"
    );
    assert_eq!(
        b.delete_expired_pending_inbound(t0 - 600).await.expect(C),
        0,
        "{C}: pending inbound's time"
    );
    assert_eq!(
        b.take_sent_message(chat, "M1").await.expect(C),
        Some(b"sent-1".to_vec()),
        "{C}: sent message"
    );
    assert_eq!(
        b.take_sent_message(chat, "M2").await.expect(C),
        None,
        "{C}: taken sent message"
    );
    assert_eq!(
        b.get_pending_inbound(chat, "sender@lid", "P1")
            .await
            .expect(C),
        Some(b"pending-1".to_vec()),
        "{C}: pending inbound"
    );
    assert_eq!(
        b.get_pending_inbound(chat, "sender@lid", "P2")
            .await
            .expect(C),
        None,
        "{C}: deleted pending inbound"
    );
    assert_eq!(
        b.get_msg_secret_with_ts(chat, "sender@lid", "S1")
            .await
            .expect(C),
        Some((vec![1; 32], 1_700_000_000)),
        "{C}: message secret with parent time"
    );
    // The deadlines were kept: S1 expires at its deadline, S2 never.
    assert_eq!(
        b.delete_expired_msg_secrets(deadline - 1).await.expect(C),
        0,
        "{C}: message secret before its deadline"
    );
    assert_eq!(
        b.delete_expired_msg_secrets(deadline).await.expect(C),
        1,
        "{C}: message secret at its deadline"
    );
    assert_eq!(
        b.get_msg_secret(chat, "sender@lid", "S2").await.expect(C),
        Some(vec![2; 32]),
        "{C}: never-expiring message secret"
    );
}

/// A saved device survives a reopen, every persisted field intact; storage
/// with no device reopens with none.
async fn durable_device<S: Subject>(subject: &S) {
    const C: &str = "durable_device";
    let empty = subject.fresh().await;
    let reopened_empty = subject.reopen(&empty).await;
    assert!(
        !reopened_empty.exists().await.expect(C),
        "{C}: no device: exists"
    );
    assert!(
        reopened_empty.load().await.expect(C).is_none(),
        "{C}: no device: load"
    );

    let a = subject.fresh().await;
    a.create().await.expect(C);
    let device = sample_device(C);
    a.save(&device).await.expect(C);

    let b = subject.reopen(&a).await;
    assert!(b.exists().await.expect(C), "{C}: exists");
    let loaded = b.load().await.expect(C).expect(C);
    assert_eq!(device_view(&loaded), device_view(&device), "{C}: device");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use whatsapp_rust_sqlite_storage::SqliteStore;

    use super::*;
    use crate::rows::memory::MemoryRows;
    use crate::RowBackend;

    /// The library's file store: a new file per backend. The suite reopens
    /// the backend it made last, so that is the file reopened.
    struct Files {
        dir: tempfile::TempDir,
        made: AtomicUsize,
    }

    impl Files {
        fn path(&self, n: usize) -> String {
            let path = self.dir.path().join(format!("s{n}.db"));
            path.to_str().unwrap().to_string()
        }
    }

    #[async_trait]
    impl Subject for Files {
        type Backend = SqliteStore;

        async fn fresh(&self) -> SqliteStore {
            let n = self.made.fetch_add(1, Ordering::Relaxed);
            SqliteStore::new(&self.path(n)).await.unwrap()
        }

        async fn reopen(&self, _backend: &SqliteStore) -> SqliteStore {
            let last = self.made.load(Ordering::Relaxed) - 1;
            SqliteStore::new(&self.path(last)).await.unwrap()
        }
    }

    /// The row store on in-memory rows, reopened on the same rows.
    struct Rows;

    #[async_trait]
    impl Subject for Rows {
        type Backend = RowBackend;

        async fn fresh(&self) -> RowBackend {
            RowBackend::new(Arc::new(MemoryRows::default()))
        }

        async fn reopen(&self, backend: &RowBackend) -> RowBackend {
            RowBackend::new(backend.rows())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_libraries_file_store_passes() {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
            made: AtomicUsize::new(0),
        };
        run(&files).await;
        assert!(files.made.load(Ordering::Relaxed) > 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_row_store_passes() {
        run(&Rows).await;
    }
}
