//! Diagnostics: errors about user input that point at a file, line and
//! column, drawn with the offending line and a caret, in the style of rustc
//! and just. Everything the loader rejects becomes one of these, so a user
//! always learns where to look.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded text file: its path as the user named it and its content.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: PathBuf, text: String) -> Self {
        Self { path, text }
    }

    /// Read a file; the error is a diagnostic naming the file.
    pub fn read(path: &std::path::Path) -> Result<Arc<Self>, Diagnostic> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Arc::new(Self::new(path.to_path_buf(), text))),
            Err(e) => Err(Diagnostic::new(format!("cannot read `{}`: {e}", path.display()))),
        }
    }

    fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// A 1-based line and column, and the width of what is pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col, len: 1 }
    }

    #[must_use]
    pub const fn with_len(self, len: u32) -> Self {
        Self { len, ..self }
    }
}

/// One error about user input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    /// The source line pointed at, captured when the diagnostic was made.
    pub snippet: Option<String>,
    pub help: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            file: None,
            pos: None,
            snippet: None,
            help: Vec::new(),
        }
    }

    pub fn at(source: &Source, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            file: Some(source.path.clone()),
            pos: Some(pos),
            snippet: source.line(pos.line).map(str::to_owned),
            help: Vec::new(),
        }
    }

    pub fn in_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: Some(path.into()),
            ..Self::new(message)
        }
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }

    /// `file:line:col` (or less, where less is known).
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?.display().to_string();
        Some(match self.pos {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(loc) = self.location() {
            if let (Some(pos), Some(line)) = (self.pos, &self.snippet) {
                let num = pos.line.to_string();
                let pad = " ".repeat(num.len());
                writeln!(f, "{pad}--> {loc}")?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{num} | {line}")?;
                // Columns count characters; tabs keep their width in the caret line.
                let lead: String = line
                    .chars()
                    .take(pos.col.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} | {lead}{}", "^".repeat(pos.len.max(1) as usize))?;
            } else {
                writeln!(f, " --> {loc}")?;
            }
        }
        for h in &self.help {
            writeln!(f, "  = help: {h}")?;
        }
        Ok(())
    }
}

/// Several diagnostics, reported together (a user fixes them in one go).
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Self(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            writeln!(f, "error: {} errors", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, if close enough to suggest.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= c.len().max(word.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "did you mean `x`?" plus the valid choices, as help lines.
pub fn suggest(d: Diagnostic, word: &str, valid: &[&str], what: &str) -> Diagnostic {
    let d = match did_you_mean(word, valid.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d,
    };
    if valid.is_empty() {
        d
    } else {
        let list: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
        d.help(format!("valid {what}: {}", list.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_column() {
        let src = Source::new("wf.yml".into(), "steps:\n  - uses: aptt\n".into());
        let d = Diagnostic::at(&src, Pos::new(2, 11).with_len(4), "unknown step `aptt`");
        let text = d.to_string();
        assert!(text.contains("--> wf.yml:2:11"), "{text}");
        assert!(text.contains("2 |   - uses: aptt\n  |           ^^^^"), "{text}");
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(did_you_mean("aptt", ["apt", "copy"]), Some("apt"));
        assert_eq!(did_you_mean("zzzz", ["apt", "copy"]), None);
    }
}
