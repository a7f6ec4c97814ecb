//! Pagination (AIP-158) for the list RPCs: page sizes, opaque page tokens bound to the request's
//! other parameters, keyset pages that end early before a response would pass ~3 MiB.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::filter::Filter;
use crate::store::EntityType;

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page; larger requests are lowered to it.
pub const MAX_PAGE_SIZE: i64 = 1000;
/// A page ends before its response would pass this (clients' default limit is 4 MiB).
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The page size to use for `asked`.
pub fn page_size(asked: i32) -> Result<i64, ApiError> {
    match asked {
        n if n < 0 => Err(ApiError::invalid(
            "page_size",
            "INVALID_PAGE_SIZE",
            "must not be negative",
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as i64).min(MAX_PAGE_SIZE)),
    }
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// The last id of the previous page.
    a: String,
    /// A hash of the parameters the token is bound to.
    q: String,
}

/// What a page token is bound to: the RPC and every parameter but the page size.
pub fn binding(rpc: &str, parent: &str, filter: &str, show_deleted: bool) -> String {
    // FNV-1a: stable across versions and processes (not a security boundary: a forged token can
    // only skip ahead in what the caller may read anyway).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{rpc}\u{1}{parent}\u{1}{filter}\u{1}{show_deleted}").bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The id to continue after (`""` for the first page).
pub fn decode_token(token: &str, binding: &str) -> Result<String, ApiError> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let invalid = |why: &str| ApiError::invalid("page_token", "INVALID_PAGE_TOKEN", why.to_string());
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid("not a page token of this API"))?;
    let t: Token = serde_json::from_slice(&raw).map_err(|_| invalid("not a page token of this API"))?;
    if t.q != binding {
        return Err(invalid(
            "the token was issued for a different parent, filter or show_deleted",
        ));
    }
    Ok(t.a)
}

pub fn encode_token(after: &str, binding: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&Token {
            a: after.to_string(),
            q: binding.to_string(),
        })
        .expect("serialises"),
    )
}

/// Parses the request's filter for `entity`.
pub fn filter(entity: EntityType, text: &str) -> Result<Option<Filter>, ApiError> {
    Filter::parse(entity, text).map_err(|e| ApiError::InvalidFilter {
        position: e.position,
        message: e.message,
    })
}

/// Cuts `items` (fetched with one extra row to see whether more follow) to a page: at most
/// `size` items and at most `MAX_PAGE_BYTES` encoded; returns the page and the next token.
pub fn page<M: prost::Message>(mut items: Vec<(String, M)>, size: i64, binding: &str) -> (Vec<M>, String) {
    let mut more = items.len() as i64 > size;
    items.truncate(size as usize);
    let mut bytes = 0;
    let mut cut = items.len();
    for (i, (_, m)) in items.iter().enumerate() {
        bytes += m.encoded_len() + 8;
        if bytes > MAX_PAGE_BYTES && i > 0 {
            cut = i;
            more = true;
            break;
        }
    }
    items.truncate(cut);
    let next = match (more, items.last()) {
        (true, Some((id, _))) => encode_token(id, binding),
        _ => String::new(),
    };
    (items.into_iter().map(|(_, m)| m).collect(), next)
}
