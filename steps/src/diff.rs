//! The diffs shown with `--diff` for steps that change file content (`copy`,
//! `template`, `line`): a unified diff of text, a size note for binary
//! content, and nothing at all of content that holds a secret.

use flowrun_engine::secrets::Masker;
use similar::TextDiff;
use std::time::Duration;

/// What is shown instead of a diff of content that contains a secret.
pub const HIDDEN: &str = "(content hidden: contains a secret)";

/// A unified diff of `path` from `old` (`None`: the file does not exist) to `new`.
pub fn file_diff(path: &str, old: Option<&[u8]>, new: &[u8], masker: &Masker) -> String {
    let old_bytes = old.unwrap_or_default();
    let (Some(o), Some(n)) = (text(old_bytes), text(new)) else {
        return format!(
            "(binary content: {} -> {} bytes)",
            old.map_or_else(|| "absent".to_owned(), |o| o.len().to_string()),
            new.len()
        );
    };
    if masker.contains_secret(o) || masker.contains_secret(n) {
        return HIDDEN.to_owned();
    }
    let old_name = if old.is_some() {
        format!("{path} (current)")
    } else {
        "/dev/null".to_owned()
    };
    TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(o, n)
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &format!("{path} (desired)"))
        .to_string()
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|s| !s.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_binary_and_secret() {
        let m = Masker::default();
        let d = file_diff("/etc/x", Some(b"a\nb\n"), b"a\nc\n", &m);
        assert!(d.contains("--- /etc/x (current)") && d.contains("-b\n+c\n"), "{d}");
        let d = file_diff("/etc/x", None, b"new\n", &m);
        assert!(d.contains("--- /dev/null") && d.contains("+new"), "{d}");
        assert_eq!(
            file_diff("/x", Some(b"\0\x01"), b"a", &m),
            "(binary content: 2 -> 1 bytes)"
        );
        m.add("hunter22");
        assert_eq!(file_diff("/x", Some(b"pw=old\n"), b"pw=hunter22\n", &m), HIDDEN);
    }
}
