//! Firewall rules as workflows write them (`{port, proto, direction, from,
//! to, action}`), checked when the step is built, and rendered as an nftables
//! table in exactly the form `nft list table` prints it back, so that "in
//! state" is a comparison of text.

use flowrun_engine::step::StepError;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub inbound: bool,
    pub proto: Option<&'static str>,
    /// `N` or `A-B`.
    pub port: Option<String>,
    pub from: Option<Net>,
    pub to: Option<Net>,
    pub allow: bool,
}

/// A network in the form nft prints it: host bits cleared, `/32` and `/128` dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub v6: bool,
    pub text: String,
}

const KEYS: &[&str] = &["port", "proto", "direction", "from", "to", "action"];

fn err(i: usize, msg: impl std::fmt::Display) -> StepError {
    StepError::param("rules", format!("rule {}: {msg}", i + 1))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse `CIDR` or an address; `any` (and `/0`) mean no restriction.
pub fn parse_net(s: &str) -> Result<Option<Net>, String> {
    if s == "any" {
        return Ok(None);
    }
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
    let max = if ip.is_ipv6() { 128 } else { 32 };
    let len: u32 = match len {
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0-{max}"))?,
        None => max,
    };
    if len == 0 {
        return Ok(None);
    }
    let (v6, net) = match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX << (32 - len);
            (false, IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask)))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX << (128 - len);
            (true, IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask)))
        }
    };
    let text = if len == max {
        net.to_string()
    } else {
        format!("{net}/{len}")
    };
    Ok(Some(Net { v6, text }))
}

fn parse_port(s: &str) -> Option<String> {
    let p = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (p(a)?, p(b)?);
            (a < b).then(|| format!("{a}-{b}"))
        }
        None => p(s).map(|p| p.to_string()),
    }
}

/// The `rules` parameter.
pub fn parse(v: &Value) -> Result<Vec<Rule>, StepError> {
    let items = match v {
        Value::Array(items) => items.clone(),
        Value::String(s) if s.trim_start().starts_with('[') => match serde_json::from_str(s) {
            Ok(Value::Array(items)) => items,
            _ => return Err(StepError::param("rules", "expected a list of rules")),
        },
        _ => return Err(StepError::param("rules", "expected a list of rules")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(m) = item else {
                return Err(err(i, "expected a mapping like `{port: 22, proto: tcp}`"));
            };
            if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(err(
                    i,
                    format!("unknown key `{k}` (expected one of {})", KEYS.join(", ")),
                ));
            }
            let get = |k: &str| m.get(k).filter(|v| !v.is_null());
            let port = match get("port") {
                None => None,
                Some(v) => Some(
                    text(v)
                        .and_then(|t| parse_port(&t))
                        .ok_or_else(|| err(i, format!("`port` must be 1-65535 or a range like 8000-8080, got {v}")))?,
                ),
            };
            let proto = match get("proto").and_then(text).as_deref() {
                None if port.is_some() => Some("tcp"),
                None => None,
                Some("tcp") => Some("tcp"),
                Some("udp") => Some("udp"),
                Some(other) => return Err(err(i, format!("`proto` must be `tcp` or `udp`, got `{other}`"))),
            };
            let inbound = match get("direction").and_then(text).as_deref() {
                None | Some("in") => true,
                Some("out") => false,
                Some(other) => return Err(err(i, format!("`direction` must be `in` or `out`, got `{other}`"))),
            };
            let allow = match get("action").and_then(text).as_deref() {
                None | Some("allow") => true,
                Some("deny") => false,
                Some(other) => return Err(err(i, format!("`action` must be `allow` or `deny`, got `{other}`"))),
            };
            let net = |k: &str| -> Result<Option<Net>, StepError> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => parse_net(&text(v).unwrap_or_default()).map_err(|e| err(i, format!("`{k}`: {e}"))),
                }
            };
            let (from, to) = (net("from")?, net("to")?);
            if let (Some(f), Some(t)) = (&from, &to) {
                if f.v6 != t.v6 {
                    return Err(err(i, "`from` and `to` mix IPv4 and IPv6"));
                }
            }
            Ok(Rule {
                inbound,
                proto,
                port,
                from,
                to,
                allow,
            })
        })
        .collect()
}

fn render_rule(r: &Rule) -> String {
    let mut words = Vec::new();
    for (net, dir) in [(&r.from, "saddr"), (&r.to, "daddr")] {
        if let Some(n) = net {
            words.push(format!("{} {dir} {}", if n.v6 { "ip6" } else { "ip" }, n.text));
        }
    }
    match (&r.proto, &r.port) {
        (Some(p), Some(port)) => words.push(format!("{p} dport {port}")),
        (Some(p), None) => words.push(format!("meta l4proto {p}")),
        _ => {}
    }
    words.push(if r.allow { "accept" } else { "drop" }.to_owned());
    words.join(" ")
}

/// The table as `nft list table inet NAME` prints it.
pub fn render(table: &str, rules: &[Rule], input_drop: bool) -> String {
    let mut s = format!("table inet {table} {{\n");
    s.push_str("\tchain input {\n");
    let _ = writeln!(
        s,
        "\t\ttype filter hook input priority filter; policy {};",
        if input_drop { "drop" } else { "accept" }
    );
    if input_drop {
        s.push_str("\t\tct state established,related accept\n\t\tiif \"lo\" accept\n");
        s.push_str("\t\tmeta l4proto { icmp, ipv6-icmp } accept\n");
    }
    for r in rules.iter().filter(|r| r.inbound) {
        let _ = writeln!(s, "\t\t{}", render_rule(r));
    }
    s.push_str("\t}\n");
    let out: Vec<&Rule> = rules.iter().filter(|r| !r.inbound).collect();
    if !out.is_empty() {
        s.push_str("\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n");
        for r in out {
            let _ = writeln!(s, "\t\t{}", render_rule(r));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// Whitespace and blank lines do not matter, nor do rule handles.
pub fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| l.split(" # handle ").next().unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn networks_as_nft_prints_them() {
        let n = |s: &str| parse_net(s).unwrap().map(|n| n.text);
        assert_eq!(n("10.1.2.3/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(n("10.1.2.3/32").as_deref(), Some("10.1.2.3"));
        assert_eq!(n("2001:db8:0:0::1/128").as_deref(), Some("2001:db8::1"));
        assert_eq!(n("2001:db8::1/32").as_deref(), Some("2001:db8::/32"));
        assert_eq!(n("0.0.0.0/0"), None);
        assert_eq!(n("any"), None);
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn rules_render_in_order() {
        let rules = parse(&json!([
            {"port": 22},
            {"port": "9100", "from": "10.0.0.0/8"},
            {"port": "5000-5010", "proto": "udp", "from": "fd00::/8", "action": "deny"},
            {"direction": "out", "to": "10.0.0.1", "port": 53, "proto": "udp"}
        ]))
        .unwrap();
        let t = render("flowrun", &rules, true);
        assert_eq!(
            t,
            "table inet flowrun {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\
             \t\tct state established,related accept\n\t\tiif \"lo\" accept\n\
             \t\tmeta l4proto { icmp, ipv6-icmp } accept\n\t\ttcp dport 22 accept\n\
             \t\tip saddr 10.0.0.0/8 tcp dport 9100 accept\n\t\tip6 saddr fd00::/8 udp dport 5000-5010 drop\n\t}\n\n\
             \tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\
             \t\tip daddr 10.0.0.1 udp dport 53 accept\n\t}\n}\n"
        );
    }

    #[test]
    fn bad_rules_say_which_and_why() {
        let e = |v: Value| parse(&v).unwrap_err().message;
        assert!(e(json!([{"port": 22}, {"prot": "tcp"}])).starts_with("parameter `rules`: rule 2: unknown key `prot`"));
        assert!(e(json!([{"port": 70000}])).contains("`port` must be 1-65535"));
        assert!(e(json!([{"port": "90-80"}])).contains("`port`"));
        assert!(e(json!([{"proto": "icmp"}])).contains("`proto` must be `tcp` or `udp`"));
        assert!(e(json!([{"from": "10.0.0.0/8", "to": "::1"}])).contains("mix IPv4 and IPv6"));
        assert!(e(json!({"port": 1})).contains("expected a list"));
    }
}
