//! Host patterns: `all`, groups, hosts, globs, `:` (or `,`) union, `:&`
//! intersection, `:!` exclusion; hosts come back in inventory order.

use super::Inventory;

impl Inventory {
    /// Hosts matching a pattern, in inventory order. Unknown names are an error (a typo).
    pub fn resolve(&self, pattern: &str) -> Result<Vec<String>, String> {
        let mut selected: Vec<String> = Vec::new();
        for part in pattern.split([':', ',']).map(str::trim).filter(|p| !p.is_empty()) {
            let (op, name) = match part.as_bytes()[0] {
                b'!' => ('!', &part[1..]),
                b'&' => ('&', &part[1..]),
                _ => ('+', part),
            };
            let hosts = self.match_one(name)?;
            match op {
                '!' => selected.retain(|h| !hosts.contains(h)),
                '&' => selected.retain(|h| hosts.contains(h)),
                _ => {
                    for h in hosts {
                        if !selected.contains(&h) {
                            selected.push(h);
                        }
                    }
                }
            }
        }
        let order: Vec<&String> = self.hosts.keys().collect();
        selected.sort_by_key(|h| order.iter().position(|o| *o == h).unwrap_or(usize::MAX));
        Ok(selected)
    }

    fn match_one(&self, name: &str) -> Result<Vec<String>, String> {
        if name == "localhost" && !self.hosts.contains_key("localhost") {
            return Ok(vec!["localhost".into()]);
        }
        if name == "all" || name == "*" {
            return Ok(self.hosts.keys().cloned().collect());
        }
        if self.groups.contains_key(name) {
            let mut out = Vec::new();
            self.collect_group(name, &mut out, &mut Vec::new());
            return Ok(out);
        }
        if self.hosts.contains_key(name) {
            return Ok(vec![name.to_owned()]);
        }
        if name.contains('*') {
            let out: Vec<String> = self.hosts.keys().filter(|h| glob(name, h)).cloned().collect();
            return Ok(out);
        }
        let mut names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        names.extend(self.hosts.keys().map(String::as_str));
        names.push("localhost");
        let mut msg = format!("no host or group `{name}` in the inventory");
        if let Some(s) = crate::diag::did_you_mean(name, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        Err(msg)
    }

    fn collect_group(&self, g: &str, out: &mut Vec<String>, seen: &mut Vec<String>) {
        if seen.iter().any(|s| s == g) {
            return;
        }
        seen.push(g.to_owned());
        if let Some(group) = self.groups.get(g) {
            for h in &group.hosts {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
            for c in &group.children {
                self.collect_group(c, out, seen);
            }
        }
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len())
                    .any(|i| text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{inv, INV};

    #[test]
    fn patterns() {
        let i = inv(INV);
        assert_eq!(i.resolve("all").unwrap(), ["r1", "r2", "m1"]);
        assert_eq!(i.resolve("runners").unwrap(), ["r1", "r2"]);
        assert_eq!(i.resolve("all:!runners").unwrap(), ["m1"]);
        assert_eq!(i.resolve("runners:&r*1").unwrap(), ["r1"]);
        assert_eq!(i.resolve("m1,r2").unwrap(), ["r2", "m1"]);
        assert_eq!(i.resolve("localhost").unwrap(), ["localhost"]);
        assert!(i.resolve("runers").unwrap_err().contains("did you mean `runners`"));
    }
}
