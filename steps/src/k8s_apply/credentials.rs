//! The credentials a request carries, obtained when the step first needs
//! them: a token read from `tokenFile`, a client certificate and key, or the
//! output of an `exec` plugin (`client.authentication.k8s.io/v1`
//! ExecCredential, as GKE's `gke-gcloud-auth-plugin` prints it). A plugin's
//! answer is reused, process-wide, until its `expirationTimestamp` (or for
//! the whole run when it gives none), and fetched again after a 401. Every
//! token and key is registered as a secret before anything can print it.

use super::kubeconfig::{Exec, Resolved};
use flowrun_engine::secrets::Masker;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How long an exec plugin may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// Stderr shown from a failed plugin, at most.
const STDERR_SHOWN: usize = 600;

/// What requests authenticate with.
#[derive(Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    /// Client certificate and key, PEM, concatenated.
    pub identity: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("identity", &self.identity.as_ref().map(|_| "****"))
            .finish()
    }
}

struct Cached {
    creds: Credentials,
    expires: Option<SystemTime>,
}

fn cache() -> &'static Mutex<HashMap<String, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache_key(exec: &Exec, server: &str) -> String {
    json!([exec.command, exec.args, exec.env, exec.api_version, server]).to_string()
}

/// The credentials of `r`; `refresh` runs an exec plugin again even when its
/// last answer has not expired (after a 401).
pub async fn obtain(r: &Resolved, refresh: bool) -> Result<Credentials, String> {
    let masker = Masker::global();
    let mut creds = Credentials::default();
    if let Some((cert, key)) = &r.auth.client_cert {
        let mut pem = cert.read("client certificate")?;
        let key = key.read("client key")?;
        masker.add(&String::from_utf8_lossy(&key));
        pem.push(b'\n');
        pem.extend_from_slice(&key);
        creds.identity = Some(pem);
    }
    creds.token.clone_from(&r.auth.token);
    if creds.token.is_none() {
        if let Some(f) = &r.auth.token_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the `tokenFile` `{}`: {e}", f.display()))?;
            let t = text.trim().to_owned();
            if t.is_empty() {
                return Err(format!("the `tokenFile` `{}` is empty", f.display()));
            }
            masker.add(&t);
            creds.token = Some(t);
        }
    }
    if let Some(exec) = &r.auth.exec {
        let from_plugin = run_cached(exec, r, refresh).await?;
        if from_plugin.token.is_some() {
            creds.token = from_plugin.token;
        }
        if from_plugin.identity.is_some() {
            creds.identity = from_plugin.identity;
        }
    }
    Ok(creds)
}

async fn run_cached(exec: &Exec, r: &Resolved, refresh: bool) -> Result<Credentials, String> {
    let key = cache_key(exec, &r.server);
    if !refresh {
        let cached = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cached.get(&key) {
            if c.expires.is_none_or(|t| SystemTime::now() < t) {
                return Ok(c.creds.clone());
            }
        }
    }
    let (creds, expires) = run(exec, r).await?;
    cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            key,
            Cached {
                creds: creds.clone(),
                expires,
            },
        );
    Ok(creds)
}

/// What the plugin is told (`KUBERNETES_EXEC_INFO`).
fn exec_info(exec: &Exec, r: &Resolved) -> Value {
    let mut spec = json!({"interactive": false});
    if exec.provide_cluster_info {
        let c = &r.cluster_info;
        let mut cluster = json!({"server": r.server, "insecure-skip-tls-verify": r.insecure});
        if let Some(d) = c.get("certificate-authority-data").filter(|v| !v.is_null()) {
            cluster["certificate-authority-data"] = d.clone();
        }
        if let Some(cfg) = c.get("extensions").and_then(Value::as_array).and_then(|exts| {
            exts.iter()
                .find(|e| e["name"] == "client.authentication.k8s.io/exec")
                .map(|e| e["extension"].clone())
        }) {
            cluster["config"] = cfg;
        }
        spec["cluster"] = cluster;
    }
    json!({"apiVersion": exec.api_version, "kind": "ExecCredential", "spec": spec})
}

fn command_path(exec: &Exec) -> std::path::PathBuf {
    let p = std::path::Path::new(&exec.command);
    if p.is_relative() && exec.command.contains('/') {
        exec.dir.join(p)
    } else {
        p.to_owned()
    }
}

async fn run(exec: &Exec, r: &Resolved) -> Result<(Credentials, Option<SystemTime>), String> {
    if exec.interactive_mode == "Always" {
        return Err(format!(
            "the `exec` plugin `{}` wants an interactive terminal (`interactiveMode: Always`), which a flowrun run never has",
            exec.command
        ));
    }
    let mut cmd = tokio::process::Command::new(command_path(exec));
    cmd.args(&exec.args)
        .envs(exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBERNETES_EXEC_INFO", exec_info(exec, r).to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(EXEC_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "the `exec` plugin `{}` did not answer within {}s",
                exec.command,
                EXEC_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = exec
                .install_hint
                .as_deref()
                .map(|h| format!(": {}", h.trim()))
                .unwrap_or_default();
            return Err(format!("the `exec` plugin `{}` is not installed{hint}", exec.command));
        }
        Ok(Err(e)) => return Err(format!("cannot run the `exec` plugin `{}`: {e}", exec.command)),
        Ok(Ok(out)) => out,
    };
    credential(exec, &out)
}

/// The ExecCredential a plugin printed (or why it is not one).
fn credential(exec: &Exec, out: &std::process::Output) -> Result<(Credentials, Option<SystemTime>), String> {
    let masker = Masker::global();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    // Register what it gave before any message can include it.
    let status = parsed.as_ref().map(|v| v["status"].clone()).unwrap_or(Value::Null);
    for k in ["token", "clientKeyData"] {
        if let Some(s) = status[k].as_str() {
            masker.add(s);
        }
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let mut err: String = masker.mask(err.trim()).chars().take(STDERR_SHOWN).collect();
        if err.is_empty() {
            err = "(no output on stderr)".into();
        }
        return Err(format!(
            "the `exec` plugin `{}` failed ({}): {err}",
            exec.command, out.status
        ));
    }
    let Some(v) = parsed else {
        return Err(format!(
            "the `exec` plugin `{}` did not print an ExecCredential (JSON) on stdout",
            exec.command
        ));
    };
    if v["kind"] != "ExecCredential" || v["apiVersion"].as_str() != Some(exec.api_version.as_str()) {
        return Err(format!(
            "the `exec` plugin `{}` answered `{} {}`, expected `{} ExecCredential`",
            exec.command,
            v["apiVersion"].as_str().unwrap_or("?"),
            v["kind"].as_str().unwrap_or("?"),
            exec.api_version
        ));
    }
    let mut creds = Credentials {
        token: status["token"].as_str().filter(|t| !t.is_empty()).map(str::to_owned),
        identity: None,
    };
    if let (Some(c), Some(k)) = (
        status["clientCertificateData"].as_str(),
        status["clientKeyData"].as_str(),
    ) {
        creds.identity = Some(format!("{c}\n{k}").into_bytes());
    }
    if creds.token.is_none() && creds.identity.is_none() {
        return Err(format!(
            "the `exec` plugin `{}` gave neither `status.token` nor `status.clientCertificateData`",
            exec.command
        ));
    }
    let expires = match status["expirationTimestamp"].as_str() {
        Some(t) => Some(humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).map_err(|e| {
            format!(
                "the `exec` plugin `{}` gave an `expirationTimestamp` that is not RFC 3339 (`{t}`): {e}",
                exec.command
            )
        })?),
        None => None,
    };
    Ok((creds, expires))
}
