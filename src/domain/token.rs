//! Bearer token secrets: generation, hashing and the recognisable format.
//!
//! A token is `whatan_<kind>_<43 base62 chars>` (256 bits from the OS RNG).
//! The prefix lets secret scanners find leaked tokens. Only the SHA-256 of
//! the secret is stored: tokens are high-entropy, so a slow KDF would add
//! nothing but latency, and the lookup is by hash (an index), compared again
//! in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SECRET_CHARS: usize = 43; // 62^43 > 2^256

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Reaches the Send API.
    Send,
    /// For the MCP server; refused by the Send API.
    Mcp,
    /// Reads `GET /metrics` and nothing else; only owners may hold one.
    Metrics,
}

impl TokenKind {
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "send" => Some(TokenKind::Send),
            "mcp" => Some(TokenKind::Mcp),
            "metrics" => Some(TokenKind::Metrics),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Send => "send",
            TokenKind::Mcp => "mcp",
            TokenKind::Metrics => "metrics",
        }
    }
}

/// A freshly generated secret with what the store keeps of it.
pub struct NewToken {
    pub secret: String,
    pub hash: [u8; 32],
    /// Safe to show in listings: `whatan_send_…wXyZ`.
    pub hint: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

pub fn generate(kind: TokenKind) -> NewToken {
    let mut rng = rand::rngs::OsRng;
    let mut body = String::with_capacity(SECRET_CHARS);
    while body.len() < SECRET_CHARS {
        // Rejection sampling keeps every character uniform.
        let b = (rng.next_u32() & 0xff) as u8;
        if b < 248 {
            body.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    let prefix = format!("whatan_{}_", kind.as_str());
    let secret = format!("{prefix}{body}");
    NewToken {
        hash: hash(&secret),
        hint: format!("{prefix}…{}", &body[SECRET_CHARS - 4..]),
        secret,
    }
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time comparison of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Cheap syntactic check before touching the database.
pub fn looks_like_token(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with("whatan_")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_long_and_distinct() {
        let a = generate(TokenKind::Send);
        let b = generate(TokenKind::Send);
        assert!(a.secret.starts_with("whatan_send_"));
        assert_eq!(a.secret.len(), "whatan_send_".len() + SECRET_CHARS);
        assert_ne!(a.secret, b.secret);
        assert!(looks_like_token(&a.secret));
        assert_eq!(a.hash, hash(&a.secret));
        assert!(hashes_equal(&a.hash, &hash(&a.secret)));
        assert!(!hashes_equal(&a.hash, &b.hash));
        assert!(!format!("{a:?}").contains(&a.secret));
        assert!(generate(TokenKind::Mcp).secret.starts_with("whatan_mcp_"));
    }
}
