//! Bearer tokens: issued at random, stored hashed, checked in constant time.
//!
//! A token is `till_` followed by 96 hex digits: a 16-byte token id, which finds the stored
//! credential, and a 32-byte secret, of which only the blake3 hash is stored. The check compares
//! hashes with blake3's constant-time equality, so response timing says nothing about the secret.

use crate::store::{Credential, UserId};
use rand::RngCore;

const PREFIX: &str = "till_";

/// A freshly issued token (shown once) and what the store keeps of it.
pub(crate) fn issue() -> (String, Credential) {
    let mut rng = rand::rngs::OsRng;
    let mut token_id = [0u8; 16];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut token_id);
    rng.fill_bytes(&mut secret);
    let token = format!("{PREFIX}{}{}", hex(&token_id), hex(&secret));
    let credential = Credential {
        token_id,
        secret_hash: *blake3::hash(&secret).as_bytes(),
    };
    (token, credential)
}

/// A presented token split into its id and the hash of its secret; `None` if it is not of our form.
pub(crate) fn parse(token: &str) -> Option<([u8; 16], blake3::Hash)> {
    let digits = token.strip_prefix(PREFIX)?;
    if digits.len() != 96 {
        return None;
    }
    let mut bytes = [0u8; 48];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(text, 16).ok()?;
    }
    let mut token_id = [0u8; 16];
    token_id.copy_from_slice(&bytes[..16]);
    Some((token_id, blake3::hash(&bytes[16..])))
}

/// Whether the presented secret hash matches the stored one, in constant time.
pub(crate) fn matches(presented: &blake3::Hash, stored: &[u8; 32], user: UserId) -> Option<UserId> {
    (*presented == blake3::Hash::from_bytes(*stored)).then_some(user)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_back_to_their_credential() {
        let (token, credential) = issue();
        let (id, hash) = parse(&token).unwrap();
        assert_eq!(id, credential.token_id);
        assert!(matches(&hash, &credential.secret_hash, UserId(1)).is_some());
        let (other, _) = issue();
        let (_, wrong) = parse(&other).unwrap();
        assert!(matches(&wrong, &credential.secret_hash, UserId(1)).is_none());
        assert!(parse("till_zz").is_none());
        assert!(parse(&token.replace("till_", "nope_")).is_none());
        assert!(parse(&format!("{}g", &token[..token.len() - 1])).is_none());
    }
}
