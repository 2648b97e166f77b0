//! The GitHub REST calls the `github_runner` states share: a client with
//! GitHub's headers, every runner of the repository page by page (following
//! the `Link` header's `rel="next"`, `per_page` 100, bounded), one runner by
//! name, setting a runner's custom labels, and runner tokens.

use crate::api::{segment, ApiClient, ClientOptions, Req};
use flowrun_engine::step::{StepContext, StepError};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

pub const PER_PAGE: usize = 100;
/// Pages read at most (10,000 runners).
pub const MAX_PAGES: usize = 100;
/// Labels GitHub gives a runner itself (`read-only`); the rest are custom.
pub const DEFAULT_LABELS: &[&str] = &["self-hosted", "Linux", "X64", "ARM64", "ARM", "macOS", "Windows"];

/// A repository's runners API.
pub struct Gh {
    pub api_url: String,
    pub token: String,
    /// `/repos/OWNER/NAME/actions/runners`.
    pub base: String,
    pub repo: String,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub client: OnceLock<ApiClient>,
}

/// A runner as the steps use it: `{id, name, status, busy, labels}` (label names).
pub fn runner_view(r: &Value) -> Value {
    let labels: Vec<Value> = r
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("name").cloned())
        .collect();
    json!({
        "id": r.get("id").cloned().unwrap_or(Value::Null),
        "name": r.get("name").cloned().unwrap_or(Value::Null),
        "status": r.get("status").cloned().unwrap_or(Value::Null),
        "busy": r.get("busy").cloned().unwrap_or(Value::Bool(false)),
        "labels": labels,
    })
}

/// The label names of a runner view.
pub fn labels_of(r: &Value) -> Vec<String> {
    r.get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

/// Whether `labels` has `want`, as GitHub compares labels (case-insensitively).
pub fn has_label(labels: &[String], want: &str) -> bool {
    labels.iter().any(|l| l.eq_ignore_ascii_case(want))
}

/// `rel="next"` of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

impl Gh {
    pub fn client(&self, cx: &StepContext) -> Result<&ApiClient, StepError> {
        cx.add_secret(&self.token);
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let mut opts = ClientOptions::new("github", &self.api_url);
        opts.ca_file.clone_from(&self.ca_file);
        opts.insecure = self.insecure;
        opts.headers = vec![
            ("accept", "application/vnd.github+json".to_owned()),
            ("x-github-api-version", "2022-11-28".to_owned()),
        ];
        opts.auth = Some(("authorization", format!("Bearer {}", self.token)));
        let client = ApiClient::new(opts)?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Every runner of the repository (only those named `name` when given).
    pub async fn runners(&self, api: &ApiClient, name: Option<&str>) -> Result<Vec<Value>, StepError> {
        let mut req = Req::get(&self.base).query("per_page", PER_PAGE);
        if let Some(n) = name {
            req = req.query("name", n);
        }
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = api
                .send(req)
                .await
                .map_err(|e| StepError::failed(format!("listing the runners of `{}`: {e}", self.repo)))?;
            let items = resp.json.get("runners").and_then(Value::as_array);
            out.extend(items.into_iter().flatten().map(runner_view));
            let Some(next) = next_link(&resp.headers) else {
                return Ok(out);
            };
            // Follow the link only on the API this step was given: the token goes with it.
            let Some(path) = next.strip_prefix(api.base_url()).filter(|p| p.starts_with('/')) else {
                return Err(StepError::failed(format!(
                    "github: the next page of runners is at `{next}`, outside `{}`",
                    api.base_url()
                )));
            };
            req = Req::get(path);
        }
        tracing::warn!(
            "`{}` has more than {} runners: listed the first ones only",
            self.repo,
            out.len()
        );
        Ok(out)
    }

    /// The runner named `name` (GitHub compares names case-insensitively).
    pub async fn runner(&self, api: &ApiClient, name: &str) -> Result<Option<Value>, StepError> {
        let list = self.runners(api, Some(name)).await?;
        Ok(list.into_iter().find(|r| {
            r.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }))
    }

    /// A registration (`registration-token`) or remove (`remove-token`) token.
    pub async fn runner_token(
        &self,
        api: &ApiClient,
        cx: &StepContext,
        kind: &str,
    ) -> Result<(String, Value), StepError> {
        let resp = api
            .send(Req::post(format!("{}/{kind}", self.base)))
            .await
            .map_err(|e| StepError::failed(format!("creating a {kind} for `{}`: {e}", self.repo)))?;
        let Some(token) = resp.json.get("token").and_then(Value::as_str) else {
            return Err(StepError::failed(format!("github: the {kind} answer has no `token`")));
        };
        cx.add_secret(token);
        Ok((
            token.to_owned(),
            resp.json.get("expires_at").cloned().unwrap_or(Value::Null),
        ))
    }

    /// Set the custom labels of runner `id` (GitHub keeps its own read-only ones).
    pub async fn set_labels(&self, api: &ApiClient, id: u64, labels: &[String]) -> Result<(), StepError> {
        api.send(Req::put(format!("{}/{id}/labels", self.base)).json(json!({ "labels": labels })))
            .await
            .map(|_| ())
            .map_err(|e| StepError::failed(format!("setting the labels of runner {id} of `{}`: {e}", self.repo)))
    }

    /// Delete runner `id`; gone already is fine.
    pub async fn delete(&self, api: &ApiClient, id: u64) -> Result<(), StepError> {
        match api.send(Req::delete(format!("{}/{id}", self.base))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(404) => Ok(()),
            Err(e) => Err(StepError::failed(format!(
                "deleting runner {id} of `{}`: {e}",
                self.repo
            ))),
        }
    }
}

/// `/repos/OWNER/NAME/actions/runners`.
pub fn base_path(owner: &str, name: &str) -> String {
    format!("/repos/{}/{}/actions/runners", segment(owner), segment(name))
}

/// The web URL runners register with (`config.sh --url`): github.com for the
/// public API, else the API's host without `/api/v3` (GitHub Enterprise Server).
pub fn github_url(api_url: &str, repo: &str) -> String {
    let api = api_url.trim_end_matches('/');
    let web = if api == "https://api.github.com" {
        "https://github.com"
    } else {
        api.strip_suffix("/api/v3").unwrap_or(api)
    };
    format!("{web}/{repo}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_url_from_api_url() {
        assert_eq!(github_url("https://api.github.com", "a/b"), "https://github.com/a/b");
        assert_eq!(
            github_url("https://ghe.example.com/api/v3/", "a/b"),
            "https://ghe.example.com/a/b"
        );
        assert_eq!(github_url("http://127.0.0.1:9", "a/b"), "http://127.0.0.1:9/a/b");
    }

    #[test]
    fn finds_the_next_link() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "link",
            "<https://x/r?page=1>; rel=\"prev\", <https://x/r?per_page=100&page=3>; rel=\"next\", <https://x/r?page=9>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x/r?per_page=100&page=3"));
        h.insert("link", "<https://x/r?page=1>; rel=\"first\"".parse().unwrap());
        assert_eq!(next_link(&h), None);
    }
}
