//! Secrets: where they come from (env, file, command, with fallbacks: see
//! [`source`]), how they are kept out
//! of every output (the [`Masker`] replaces their values with `****` in
//! anything printed, logged, reported or journaled), and how the journal can
//! still tell whether a secret changed (keyed hashes) and restore secret
//! outputs (authenticated encryption) without storing them in plaintext. The
//! key lives in a file of mode 0600 beside the journal.

mod source;

pub use source::{expand_vars, parse_def, Found};

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

/// Resolve every secret a workflow declares, registering each value with the
/// masker. A required secret that none of its sources sets is an error that
/// points at the declaration and names every source tried.
pub fn resolve(
    defs: &indexmap::IndexMap<String, crate::model::SecretDef>,
    masker: &Masker,
) -> Result<serde_json::Map<String, serde_json::Value>, crate::diag::Diagnostics> {
    use crate::diag::{Diagnostic, Diagnostics, Source};
    let mut out = serde_json::Map::new();
    let mut errs = Diagnostics::default();
    let located = |file: &Path, pos: crate::diag::Pos, m: String| match Source::read(file) {
        Ok(src) => Diagnostic::at(&src, pos, m),
        Err(_) => Diagnostic::in_file(file, m),
    };
    for (name, def) in defs {
        let mut tried = Vec::new();
        let mut value = None;
        for source in &def.sources {
            match source.read() {
                Found::Value(v) => {
                    value = Some(v);
                    break;
                }
                Found::NotSet(why) => tried.push(format!("{} ({why})", source.describe())),
            }
        }
        match value {
            Some(v) if v.len() < 3 => errs.push(located(
                &def.file,
                def.pos,
                format!("secret `{name}` is shorter than 3 characters: too short to mask in output"),
            )),
            Some(v) => {
                masker.add(&v);
                out.insert(name.clone(), serde_json::Value::String(v));
            }
            // Optional and not set: empty, nothing to mask; the workflow decides.
            None if def.optional => {
                out.insert(name.clone(), serde_json::Value::String(String::new()));
            }
            None => errs.push(
                located(
                    &def.file,
                    def.pos,
                    format!("secret `{name}` is not set: tried {}", tried.join(", ")),
                )
                .help("set one of them, or declare the secret `optional: true` if an empty value is fine"),
            ),
        }
    }
    errs.into_result(out)
}

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
    pub fn ephemeral() -> Self {
        let mut k = [0u8; 32];
        let _ = getrandom::fill(&mut k);
        Self(k)
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

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 12];
        let _ = getrandom::fill(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(cipher.encrypt(Nonce::from_slice(&nonce), plaintext).unwrap_or_default());
        out
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

    fn def(sources: Vec<crate::model::SecretSource>, optional: bool) -> crate::model::SecretDef {
        crate::model::SecretDef {
            name: "t".into(),
            sources,
            optional,
            file: "wf.yml".into(),
            pos: crate::diag::Pos::new(1, 1),
        }
    }

    fn one(d: crate::model::SecretDef, m: &Masker) -> Result<String, String> {
        resolve(&[("t".to_owned(), d)].into_iter().collect(), m)
            .map(|v| v["t"].as_str().unwrap().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_first_source_that_is_set_wins() {
        use crate::model::SecretSource::{Command, Env, File};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let m = Masker::default();
        let unset = Env("FLOWRUN_TEST_SURELY_UNSET".into());
        let file = |p: &std::path::Path| File(p.display().to_string());
        let got = one(
            def(
                vec![unset.clone(), file(&empty), file(&f), Command("echo nope".into())],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "from-file");
        assert_eq!(m.mask("x from-file"), "x ****");
        let got = one(
            def(
                vec![unset.clone(), Command("false".into()), Command("printf s3cret".into())],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "s3cret");
        // `$VAR` in a path: an unset variable skips the source.
        std::env::set_var("FLOWRUN_TEST_TOKEN_DIR", dir.path());
        let got = one(
            def(
                vec![
                    File("$FLOWRUN_TEST_UNSET_DIR/token".into()),
                    File("${FLOWRUN_TEST_TOKEN_DIR}/token".into()),
                ],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "from-file");
    }

    #[test]
    fn a_missing_required_secret_names_every_source_tried() {
        use crate::model::SecretSource::{Command, Env, File};
        let m = Masker::default();
        let e = one(
            def(
                vec![
                    Env("FLOWRUN_TEST_SURELY_UNSET".into()),
                    File("/nonexistent/flowrun/token".into()),
                    File("$FLOWRUN_TEST_UNSET_FILE".into()),
                    Command("echo oops >&2; exit 4".into()),
                ],
                false,
            ),
            &m,
        )
        .unwrap_err();
        assert!(
            e.contains("secret `t` is not set: tried environment variable `FLOWRUN_TEST_SURELY_UNSET` (not set), file `/nonexistent/flowrun/token` (does not exist), file `$FLOWRUN_TEST_UNSET_FILE` (`$FLOWRUN_TEST_UNSET_FILE` is not set), command `echo oops >&2; exit 4` (exited with status 4: oops)"),
            "{e}"
        );
        assert!(e.contains("optional: true"), "{e}");
        // Optional: empty, nothing to mask.
        assert_eq!(one(def(vec![Command("printf ''".into())], true), &m).unwrap(), "");
        assert!(m.is_empty());
        assert!(one(def(vec![Command("printf ab".into())], false), &m)
            .unwrap_err()
            .contains("shorter than 3 characters"));
    }

    #[test]
    fn declarations_in_every_form() {
        use crate::model::SecretSource::{Command, Env, File};
        let parse = |text: &str| {
            let src = std::sync::Arc::new(crate::diag::Source::new("wf.yml".into(), text.to_owned()));
            let root = crate::yaml::parse(&src).unwrap();
            let (k, v) = &root.as_map().unwrap()[0];
            let mut errs = crate::diag::Diagnostics::default();
            parse_def(&src, k, v, &mut errs).ok_or_else(|| errs.to_string())
        };
        let d = parse("t: { file: ~/t, env: [A, B], command: pass t, optional: true }\n").unwrap();
        assert_eq!(
            d.sources,
            [
                Env("A".into()),
                Env("B".into()),
                File("~/t".into()),
                Command("pass t".into())
            ]
        );
        assert!(d.optional);
        let d = parse("t:\n  - file: /f\n  - env: A\n").unwrap();
        assert_eq!(d.sources, [File("/f".into()), Env("A".into())]);
        assert!(!d.optional);
        let d = parse("t: { from: [ {env: B}, {file: /g} ], optional: true }\n").unwrap();
        assert_eq!(d.sources, [Env("B".into()), File("/g".into())]);
        assert!(parse("t: { optional: true }\n").unwrap_err().contains("wf.yml:1:4"));
        assert!(parse("t: { envv: A }\n").unwrap_err().contains("did you mean `env`"));
        assert!(parse("t: [ {env: A, file: B} ]\n").unwrap_err().contains("each source"));
        assert!(parse("t: { from: [ {env: A} ], env: B }\n")
            .unwrap_err()
            .contains("does not mix"));
        assert!(parse("t: { env: \"\" }\n").unwrap_err().contains("non-empty"));
    }

    #[test]
    fn encrypt_roundtrip_and_tamper() {
        let k = SecretKey::ephemeral();
        let c = k.encrypt(b"glrt-123");
        assert_eq!(k.decrypt(&c).unwrap(), b"glrt-123");
        let mut bad = c.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.decrypt(&bad).is_none());
        assert_ne!(k.keyed_hash(b"a"), SecretKey::ephemeral().keyed_hash(b"a"));
    }
}
