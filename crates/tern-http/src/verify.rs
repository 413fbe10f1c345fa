//! Who sent a request: its `Tern-Key` (and `Tern-Client`, for an app key), checked against
//! `Tern-Signature` over the canonical request, on the HTTP threads. An unknown key, a revoked
//! one and a wrong signature get the same answer, after the same work: an unknown key is
//! checked against decoy secrets, as many as a known key has.

use tern_auth::Credential;

use crate::error::ApiError;
use crate::keys::Keys;
use crate::replay::Nonce;
use crate::signing::{self, RequestParts};

/// A request whose signature verified.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) credential: Credential,
    /// The secret that signed it (responses are signed with it).
    pub(crate) secret: [u8; 32],
    pub(crate) signature: [u8; 32],
    pub(crate) nonce: Nonce,
    /// `Tern-Time`; `None` for `-` (a device without a clock, with a counter nonce).
    pub(crate) time: Option<u64>,
}

impl Verified {
    /// Nonces are counted per key and client (an app key's devices each have their own).
    pub(crate) fn principal(&self) -> String {
        format!("{}\0{}", self.credential.key_id, self.credential.client_id)
    }
}

/// The value of the header `name` (the first, if repeated).
pub(crate) fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        401,
        "signature_invalid",
        "the signature does not verify for this key (or the key is unknown)",
    )
}

/// Checks a request's key and signature.
pub(crate) fn verify(keys: &Keys, parts: &RequestParts<'_>) -> Result<Verified, ApiError> {
    let headers = parts.headers;
    let missing: Vec<&str> = ["Tern-Key", "Tern-Time", "Tern-Nonce", "Tern-Signature"]
        .into_iter()
        .filter(|name| header(headers, name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            401,
            "signature_missing",
            format!("a signed request needs {}", missing.join(", ")),
        ));
    }
    let key_id = header(headers, "Tern-Key").unwrap_or_default();
    let signature = header(headers, "Tern-Signature")
        .and_then(|value| signing::parse_signature_header(value.as_bytes()))
        .ok_or_else(|| ApiError::bad_request("Tern-Signature is v1= and 64 hex digits"))?;
    let nonce = header(headers, "Tern-Nonce")
        .and_then(Nonce::parse)
        .ok_or_else(|| ApiError::bad_request("Tern-Nonce is c:<1-16 hex> or r:<8-64 hex>"))?;
    let time = match header(headers, "Tern-Time").unwrap_or_default() {
        "-" => None,
        text => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request("Tern-Time is Unix seconds, or - with a counter nonce")
        })?),
    };
    let canonical = signing::canonical_request(parts)
        .map_err(|e| ApiError::bad_request(format!("cannot sign this request: {e}")))?;
    let client = header(headers, "Tern-Client");
    let (credential, secrets) = keys.secrets(key_id, client);
    let real = credential.as_ref().map_or(0, |c| c.secrets.len());
    let matched = signing::verify(&secrets, canonical.as_bytes(), &signature);
    match (credential, matched) {
        (Some(credential), Some(index)) if index < real => Ok(Verified {
            secret: secrets[index],
            credential,
            signature,
            nonce,
            time,
        }),
        _ => Err(unauthenticated()),
    }
}
