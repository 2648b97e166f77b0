//! Content hashes: the SHA-256 that transports report for files, computed the
//! same way for the content a step wants, so "already in state" is a compare.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    flowrun_engine::transport::local::hex(&Sha256::digest(bytes))
}
