//! Secrets at run time: how they are kept out
//! of every output (the [`Masker`] replaces their values with `****` in
//! anything printed, logged, reported or journaled), and how the journal can
//! still tell whether a secret changed (keyed hashes) and restore secret
//! outputs (authenticated encryption) without storing them in plaintext. The
//! key lives in a file of mode 0600 beside the journal. Where secrets come
//! from and how they are resolved is part of the workflow model
//! (`model::secret`).

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

pub const MASK: &str = "****";

/// The shortest line of a multi-line secret that is masked on its own.
const MIN_SECRET_LINE: usize = 8;

/// Replaces known secret values with `****`.
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    values: RwLock<Vec<String>>,
}

impl Masker {
    /// The process-wide masker: logs, reports and the journal all go through it.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<Masker>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Self::default())).clone()
    }

    /// Register a secret value. Values shorter than 3 characters are not
    /// maskable without destroying all output; they are refused by the loader.
    ///
    /// The lines of a multi-line secret (a key file) are registered too, since
    /// output may carry them one by one, but only lines that are secret
    /// material: long enough to be distinctive, and not the PEM armour lines
    /// (`-----BEGIN ... KEY-----`) that every key file shares.
    pub fn add(&self, value: &str) {
        let mut values = self.values.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let whole = value.trim();
        let lines = value
            .lines()
            .map(str::trim)
            .filter(|l| *l != whole && l.len() >= MIN_SECRET_LINE && !(l.starts_with("-----") && l.ends_with("-----")));
        for v in std::iter::once(whole).chain(lines) {
            if v.len() >= 3 && !values.iter().any(|x| x == v) {
                values.push(v.to_owned());
            }
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let values = self.values.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Cow::Borrowed(text);
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), MASK));
            }
        }
        out
    }

    /// Whether `text` contains any secret.
    pub fn contains_secret(&self, text: &str) -> bool {
        let values = self.values.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        values.iter().any(|v| text.contains(v.as_str()))
    }

    /// Replace each secret in `text` with a keyed hash of it (for fingerprints:
    /// a changed secret changes the fingerprint, the journal learns nothing).
    pub fn hash_secrets(&self, text: &str, key: &SecretKey) -> String {
        let values = self.values.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = text.to_owned();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), &format!("<secret:{}>", key.keyed_hash(v.as_bytes())));
            }
        }
        out
    }
}

/// The journal's secret key: 32 random bytes in a file of mode 0600.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(****)")
    }
}

impl SecretKey {
    /// Load the key at `path`, creating it (0600) when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                return Ok(Self(k));
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "the journal key `{}` is not 32 bytes long; remove it to start afresh (journaled secret outputs are then lost)",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&k)?;
        Ok(Self(k))
    }

    /// A key for tests and `--check` runs without a journal directory.
    /// Without randomness there is no key: an error, never a predictable one.
    pub fn ephemeral() -> std::io::Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self(k))
    }

    /// A value that identifies this key without revealing it: the journal
    /// keeps it, so a controller with another key is refused, not trusted.
    pub fn check_value(&self) -> String {
        self.keyed_hash(b"flowrun journal key check v1")
    }

    pub fn keyed_hash(&self, data: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        crate::transport::local::hex(&mac.finalize().into_bytes())
    }

    /// Encrypt with a fresh random nonce (stored in front). Without
    /// randomness this fails: a repeated nonce would give the key away.
    pub fn encrypt(&self, plaintext: &[u8]) -> std::io::Result<Vec<u8>> {
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    pub fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 12 {
            return None;
        }
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        cipher.decrypt(Nonce::from_slice(&data[..12]), &data[12..]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first() {
        let m = Masker::default();
        m.add("abc");
        m.add("abcdef");
        assert_eq!(m.mask("x abcdef y abc"), "x **** y ****");
        assert!(m.contains_secret("..abc.."));
    }

    #[test]
    fn a_multi_line_secret_masks_its_material_not_its_armour() {
        let m = Masker::default();
        m.add(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nend\n-----END OPENSSH PRIVATE KEY-----\n",
        );
        assert_eq!(m.mask("line b3BlbnNzaC1rZXktdjEAAAAA"), "line ****");
        assert_eq!(
            m.mask("-----BEGIN OPENSSH PRIVATE KEY----- at the end"),
            "-----BEGIN OPENSSH PRIVATE KEY----- at the end"
        );
        assert_eq!(
            m.mask("the end"),
            "the end",
            "a short line of a secret is not a secret of its own"
        );
    }

    #[test]
    fn encrypt_roundtrip_and_tamper() {
        let k = SecretKey::ephemeral().unwrap();
        let c = k.encrypt(b"glrt-123").unwrap();
        assert_eq!(k.decrypt(&c).unwrap(), b"glrt-123");
        let mut bad = c.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.decrypt(&bad).is_none());
        assert_ne!(k.keyed_hash(b"a"), SecretKey::ephemeral().unwrap().keyed_hash(b"a"));
    }
}
