//! Standard Webhooks signatures (standardwebhooks.com): `v1,<base64 of
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the secret shown to
//! the user is `whsec_` + base64 of the 32-byte key.
//!
//! The key itself is never stored. HMAC-SHA256 is
//! `H((K ^ opad) || H((K ^ ipad) || m))`, and both `K ^ pad` blocks are
//! exactly one SHA-256 block, so what is stored is SHA-256's state after
//! each of those blocks ([`SigningKey`]): enough to finish any signature,
//! not enough to recover the secret (that would mean inverting SHA-256's
//! compression function). A copy of the database cannot be used to show a
//! secret back, and `webhook list` has nothing to print; it can still be
//! used to sign, so backups deserve the care of the secret itself.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;
/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// What is stored of a secret: the SHA-256 states after the inner and the
/// outer padded key block.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// From the key bytes (at most one block, as webhook keys are).
    fn from_key(key: &[u8]) -> SigningKey {
        assert!(key.len() <= BLOCK, "webhook keys are at most 64 bytes");
        let pad = |byte: u8| {
            let mut block = [byte; BLOCK];
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut state = H0;
            sha2::compress256(&mut state, &[GenericArray::clone_from_slice(&block)]);
            state
        };
        SigningKey {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// From a `whsec_...` secret (what a consumer was given).
    pub fn from_secret(secret: &str) -> Option<SigningKey> {
        let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
        (!key.is_empty() && key.len() <= BLOCK).then(|| SigningKey::from_key(&key))
    }

    /// The 64 bytes stored: both states, big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner
            .iter()
            .chain(&self.outer)
            .flat_map(|w| w.to_be_bytes())
            .collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<SigningKey> {
        if bytes.len() != 64 {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        Some(SigningKey {
            inner: std::array::from_fn(word),
            outer: std::array::from_fn(|i| word(i + 8)),
        })
    }

    /// HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = finish(self.inner, message);
        finish(self.outer, &inner)
    }

    /// The `v1,<base64>` signature of one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        format!("v1,{}", STANDARD.encode(self.mac(&signed)))
    }
}

/// SHA-256 of `data`, continuing from `state` after one block.
fn finish(mut state: [u32; 8], data: &[u8]) -> [u8; 32] {
    let total_bits = ((BLOCK + data.len()) as u64) * 8;
    let mut tail = data.chunks_exact(BLOCK);
    let blocks: Vec<_> = tail.by_ref().map(GenericArray::clone_from_slice).collect();
    sha2::compress256(&mut state, &blocks);
    let rest = tail.remainder();
    let mut last = Vec::with_capacity(2 * BLOCK);
    last.extend_from_slice(rest);
    last.push(0x80);
    while last.len() % BLOCK != BLOCK - 8 {
        last.push(0);
    }
    last.extend_from_slice(&total_bits.to_be_bytes());
    let blocks: Vec<_> = last
        .chunks_exact(BLOCK)
        .map(GenericArray::clone_from_slice)
        .collect();
    sha2::compress256(&mut state, &blocks);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// A new secret: `whsec_` + base64 of 32 random bytes, shown once, and what
/// is stored of it.
pub fn new_secret() -> (String, SigningKey) {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    (
        format!("whsec_{}", STANDARD.encode(key)),
        SigningKey::from_key(&key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn reference(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn the_stored_states_give_the_same_hmac_as_the_key() {
        let key: Vec<u8> = (0u8..32).collect();
        let stored = SigningKey::from_bytes(&SigningKey::from_key(&key).to_bytes()).unwrap();
        // Around every padding boundary: 55/56 bytes fill the last block.
        for len in [0, 1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
            let message: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert_eq!(stored.mac(&message), reference(&key, &message), "{len}");
        }
    }

    #[test]
    fn standard_webhooks_reference_signature() {
        // The example of the Standard Webhooks specification's test vectors.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_look_as_the_specification_says() {
        let (secret, key) = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
        assert_eq!(SigningKey::from_secret(&secret).unwrap(), key);
        assert!(SigningKey::from_secret("whsec_").is_none());
        assert!(SigningKey::from_secret("nope").is_none());
        assert!(SigningKey::from_bytes(&[0; 63]).is_none());
    }
}
