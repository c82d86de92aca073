//! `type = "api-key"`: a key in a named header, compared in constant time
//! against each configured key.

use super::{AuthError, Identity};
use crate::config::manifest::AuthPolicy;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// One api-key policy.
pub struct ApiKeyPolicy {
    name: Arc<str>,
    /// The request header carrying the key.
    pub header: http::HeaderName,
    /// SHA-256 digests of the accepted keys: comparing digests of equal
    /// length keeps the comparison's time independent of the key's length
    /// as well as its bytes.
    digests: Vec<[u8; 32]>,
}

impl ApiKeyPolicy {
    pub(super) fn new(name: Arc<str>, policy: &AuthPolicy) -> anyhow::Result<ApiKeyPolicy> {
        let header = policy
            .header
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no header"))?;
        Ok(ApiKeyPolicy {
            name,
            header: http::HeaderName::from_bytes(header.get_ref().as_bytes())?,
            digests: policy
                .resolved
                .keys
                .iter()
                .map(|k| Sha256::digest(k).into())
                .collect(),
        })
    }

    pub(super) fn verify(&self, presented: &[u8]) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Every key is compared, whichever matches, so the time taken
        // says nothing about which key (or how much of one) was right.
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&digest));
        if !bool::from(matched) {
            return Err(AuthError::Invalid("the API key is not valid".into()));
        }
        Ok(Identity {
            policy: self.name.clone(),
            // A stable name for the key that does not reveal it.
            subject: format!("api-key:{}", &crate::ids::hex(&digest[..6])),
            scopes: Vec::new(),
            claims: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_listed_keys_only() {
        let policy = ApiKeyPolicy {
            name: "p".into(),
            header: http::HeaderName::from_static("x-api-key"),
            digests: ["key-one-0123456789", "key-two-0123456789"]
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        };
        let one = policy.verify(b"key-one-0123456789").unwrap();
        let two = policy.verify(b"key-two-0123456789").unwrap();
        assert!(one.subject.starts_with("api-key:") && one.subject.len() == 8 + 12);
        assert_ne!(one.subject, two.subject);
        for bad in [
            &b"key-one-012345678"[..],
            b"key-one-0123456789 ",
            b"",
            b"KEY-ONE-0123456789",
        ] {
            assert!(policy.verify(bad).is_err(), "{bad:?}");
        }
    }
}
