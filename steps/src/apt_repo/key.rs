//! The signing key of an apt repository: given inline (ASCII-armored) or
//! fetched by flowrun on the controller from `key_url` (`https://`, a
//! `file://` path on the controller, or `http://` on loopback only: a key
//! fetched in clear over the network could be anyone's). apt reads an armored
//! key from a `.asc` file and a binary one from a `.gpg` file.

use crate::http_client;
use flowrun_engine::step::StepError;
use std::time::Duration;

/// A key and the file extension apt expects for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub bytes: Vec<u8>,
    /// `asc` or `gpg`.
    pub ext: &'static str,
}

const ARMOR: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
const MAX_KEY: usize = 1 << 20;

/// Classify key material; `what` names where it came from in errors.
pub fn classify(bytes: Vec<u8>, what: &str) -> Result<Key, StepError> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes[start..].starts_with(ARMOR) {
        return Ok(Key { bytes, ext: "asc" });
    }
    // A binary OpenPGP packet header always has its top bit set.
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return Ok(Key { bytes, ext: "gpg" });
    }
    Err(StepError::failed(format!(
        "{what} is not an OpenPGP public key (expected an ASCII-armored `-----BEGIN PGP PUBLIC KEY BLOCK-----` \
         or a binary key)"
    )))
}

/// Fetch the key at `url` from this machine.
pub async fn fetch(url: &str) -> Result<Key, StepError> {
    let what = format!("the key at `{url}`");
    let parsed =
        reqwest::Url::parse(url).map_err(|e| StepError::param("key_url", format!("`{url}` is not a URL: {e}")))?;
    let bytes = match parsed.scheme() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|()| StepError::param("key_url", format!("`{url}` is not a file path")))?;
            std::fs::read(&path)
                .map_err(|e| StepError::param("key_url", format!("cannot read `{}`: {e}", path.display())))?
        }
        "https" => get(url).await?,
        "http" if is_loopback(&parsed) => get(url).await?,
        "http" => {
            return Err(StepError::param(
                "key_url",
                format!("`{url}`: fetch signing keys over `https://` (plain http could hand over anyone's key)"),
            ))
        }
        other => {
            return Err(StepError::param(
                "key_url",
                format!("`{url}`: unsupported scheme `{other}` (expected https:// or file://)"),
            ))
        }
    };
    if bytes.len() > MAX_KEY {
        return Err(StepError::failed(format!("{what} is larger than {MAX_KEY} bytes")));
    }
    classify(bytes, &what)
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

async fn get(url: &str) -> Result<Vec<u8>, StepError> {
    let client = http_client::client(None, false, Some(Duration::from_secs(60)))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| StepError::failed(format!("cannot fetch `{url}`: {}", http_client::describe(&e))))?;
    if !resp.status().is_success() {
        return Err(StepError::failed(format!(
            "cannot fetch `{url}`: HTTP {}",
            resp.status()
        )));
    }
    http_client::read_body(resp, MAX_KEY).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_keys() {
        let armored =
            b"\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n".to_vec();
        assert_eq!(classify(armored, "k").unwrap().ext, "asc");
        assert_eq!(classify(vec![0x99, 0x01, 0x0d], "k").unwrap().ext, "gpg");
        let e = classify(b"<html>not found</html>".to_vec(), "the key at `x`").unwrap_err();
        assert!(
            e.message.starts_with("the key at `x` is not an OpenPGP public key"),
            "{e}"
        );
        assert!(classify(Vec::new(), "k").is_err());
    }

    #[tokio::test]
    async fn urls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.gpg");
        std::fs::write(&p, [0x99, 1, 2]).unwrap();
        let k = fetch(&format!("file://{}", p.display())).await.unwrap();
        assert_eq!((k.ext, k.bytes.len()), ("gpg", 3));
        let e = fetch("http://keys.example.com/k.asc").await.unwrap_err();
        assert!(e.message.contains("over `https://`"), "{e}");
        assert!(fetch("ftp://x/y")
            .await
            .unwrap_err()
            .message
            .contains("unsupported scheme"));
        let e = fetch("http://127.0.0.1:1/k").await.unwrap_err();
        assert!(e.message.starts_with("cannot fetch `http://127.0.0.1:1/k`"), "{e}");
    }
}
