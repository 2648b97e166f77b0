//! `firewall`: allow (or deny) ports and networks with nftables, in a table
//! of flowrun's own (`inet flowrun` by default), so the host's other rules
//! (Docker's, the distribution's) are never touched.
//!
//! The table is rendered from the rules in the form `nft list table` prints,
//! compared with what the host lists (whitespace and handles aside), and
//! replaced atomically when it differs: one `nft -f -` transaction that
//! creates, deletes and recreates the table, so no packet ever sees a half
//! ruleset. `state: absent` deletes the table.
//!
//! With `input_policy: drop` everything inbound that no rule allows is
//! dropped (established connections, loopback and ICMP stay allowed); the
//! step refuses to do that on a host reached over SSH unless a rule allows
//! the SSH port, so a workflow cannot cut itself off. A `drop` policy in this
//! table drops packets whatever other tables accept (nftables evaluates every
//! base chain).
//!
//! Only the nftables backend exists; `ufw` is not supported yet.

mod rules;

use crate::diff::file_diff;
use crate::params::{literal_problem, Params};
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, LiteralProblem, Outputs, ParamSpec, ParamType, Pending, Step, StepContext,
    StepError, StepKind,
};
use flowrun_engine::transport::ExecRequest;
use rules::Rule;
use serde_json::{Map, Value};

pub struct FirewallKind;

static INFO: KindInfo = KindInfo {
    name: "firewall",
    version: 1,
    doc: "Ensure firewall rules (allow or deny ports and networks) in an nftables table of flowrun's own",
    params: &[
        ParamSpec::opt(
            "rules",
            ParamType::List,
            "rules: {port: 22 or \"8000-8080\", proto: tcp|udp (default tcp with a port), direction: in|out \
             (default in), from: CIDR, to: CIDR, action: allow|deny (default allow)}",
        ),
        ParamSpec::opt(
            "input_policy",
            ParamType::Enum(&["accept", "drop"]),
            "what happens to inbound traffic no rule allows: `accept` (default) or `drop`",
        ),
        ParamSpec::opt(
            "table",
            ParamType::Str,
            "name of the nftables table (family inet), default `flowrun`",
        ),
        ParamSpec::opt(
            "backend",
            ParamType::Enum(&["nftables"]),
            "`nftables` (the only one so far)",
        ),
        ParamSpec::opt(
            "state",
            ParamType::Enum(&["present", "absent"]),
            "`present` (default) or `absent` (the table is deleted)",
        ),
    ],
    one_of: &[],
    outputs: &["table", "rules"],
    secret_outputs: &[],
    journal: true,
};

impl StepKind for FirewallKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    /// Literal `rules` must parse: known when the workflow loads.
    fn check_literals(&self, literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        match literals.get("rules").map(rules::parse) {
            Some(Err(e)) => vec![literal_problem("rules", &e)],
            _ => Vec::new(),
        }
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        p.choice("backend", &["nftables"], "nftables")?;
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let table = p.str_or("table", "flowrun")?;
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StepError::param(
                "table",
                format!("`{table}` is not a table name (letters, digits, `_`)"),
            ));
        }
        let rules = match p.get("rules") {
            Some(v) => rules::parse(v)?,
            None if present => return Err(StepError::param("rules", "is required (or `state: absent`)")),
            None => Vec::new(),
        };
        Ok(Box::new(FirewallStep {
            table,
            present,
            input_drop: p.choice("input_policy", &["accept", "drop"], "accept")? == "drop",
            rules,
        }))
    }
}

struct FirewallStep {
    table: String,
    present: bool,
    input_drop: bool,
    rules: Vec<Rule>,
}

impl FirewallStep {
    /// The table as the host lists it, `None` when there is none.
    async fn listed(&self, cx: &StepContext) -> Result<Option<String>, StepError> {
        let out = cx
            .exec(ExecRequest::shell(format!(
                "command -v nft >/dev/null || {{ echo @@no-nft; exit 0; }}\nnft list table inet {}",
                self.table
            )))
            .await?;
        if out.stdout_str().contains("@@no-nft") {
            return Err(StepError::failed(
                "`firewall` needs `nft` on the host (Debian package `nftables`)",
            ));
        }
        if out.rc == 0 {
            return Ok(Some(out.stdout_str()));
        }
        if out.stderr_str().contains("No such file or directory") {
            return Ok(None);
        }
        Err(StepError::failed(out.failure_message("nft list table")))
    }

    fn desired(&self) -> String {
        rules::render(&self.table, &self.rules, self.input_drop)
    }

    /// A drop policy must leave the way flowrun came in open.
    fn check_ssh_stays_open(&self, cx: &StepContext) -> Result<(), StepError> {
        if !self.present || !self.input_drop || cx.host.is_local() {
            return Ok(());
        }
        let port = cx.host.conn.port.unwrap_or(22);
        let open = self.rules.iter().any(|r| {
            r.inbound
                && r.allow
                && r.proto == Some("tcp")
                && r.port.as_deref().is_some_and(|p| match p.split_once('-') {
                    Some((a, b)) => a.parse().is_ok_and(|a: u16| a <= port) && b.parse().is_ok_and(|b: u16| port <= b),
                    None => p.parse() == Ok(port),
                })
        });
        if open {
            return Ok(());
        }
        Err(StepError::failed(format!(
            "`input_policy: drop` with no rule allowing SSH (tcp port {port}) would cut flowrun off `{}`; \
             add `{{port: {port}}}` to `rules`",
            cx.host.name
        )))
    }

    fn outputs(&self) -> Outputs {
        let mut o = Outputs::new();
        o.insert(
            "table".into(),
            if self.present {
                Value::from(format!("inet {}", self.table))
            } else {
                Value::Null
            },
        );
        o.insert("rules".into(), Value::from(self.rules.len()));
        o
    }

    /// The change to make, if any: (summary, current listing).
    async fn plan(&self, cx: &StepContext) -> Result<Option<(String, Option<String>)>, StepError> {
        self.check_ssh_stays_open(cx)?;
        let listed = self.listed(cx).await?;
        let t = &self.table;
        Ok(match (&listed, self.present) {
            (None, false) => None,
            (Some(_), false) => Some((format!("delete nftables table `inet {t}`"), listed)),
            (None, true) => Some((
                format!("create nftables table `inet {t}` ({} rules)", self.rules.len()),
                None,
            )),
            (Some(have), true) if rules::normalize(have) == rules::normalize(&self.desired()) => None,
            (Some(_), true) => Some((format!("replace the rules of nftables table `inet {t}`"), listed)),
        })
    }
}

#[async_trait::async_trait]
impl Step for FirewallStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let Some((summary, listed)) = self.plan(cx).await? else {
            return Ok(Check::InSync(self.outputs()));
        };
        let mut pending = Pending::new(summary);
        if cx.mode.diff {
            let new = if self.present { self.desired() } else { String::new() };
            let name = format!("nft table inet {}", self.table);
            pending = pending.with_diff(file_diff(
                &name,
                listed.as_deref().map(str::as_bytes),
                new.as_bytes(),
                &cx.masker,
            ));
        }
        pending.outputs = self.outputs();
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let Some(_) = self.plan(cx).await? else {
            return Ok(Applied {
                changed: false,
                outputs: self.outputs(),
                message: None,
            });
        };
        let t = &self.table;
        let script = if self.present {
            // One transaction: the table exists for `delete`, and is then made anew.
            format!("table inet {t}\ndelete table inet {t}\n{}", self.desired())
        } else {
            format!("delete table inet {t}\n")
        };
        let out = cx.exec(ExecRequest::argv(["nft", "-f", "-"]).stdin(script)).await?;
        if out.rc != 0 {
            return Err(StepError::failed(out.failure_message("nft -f -")));
        }
        let mut applied = Applied::changed(self.outputs());
        if self.present {
            let listed = self.listed(cx).await?.unwrap_or_default();
            if rules::normalize(&listed) != rules::normalize(&self.desired()) {
                applied = applied.message(
                    "the rules are in place, but this nft lists them differently from how flowrun writes \
                     them, so later checks will report a change",
                );
            }
        }
        Ok(applied)
    }
}
