//! A stand-in for the Kubernetes API server (no kube-apiserver can run on
//! the machines flowrun is tested on), strict in the documented behaviour a
//! server-side-apply client relies on: HTTPS with its own CA, bearer-token
//! and client-certificate authentication, discovery, server-side apply with
//! per-manager `managedFields` and 409 conflicts, `dryRun=All` that stores
//! nothing, defaulting and canonical quantities, 404/409/415/422/500 Status
//! bodies, generation and resourceVersion rules, metadata-only reads, and a
//! Deployment controller that moves status (or never makes pods available).
//! `kubectl` is the real client it is held to (see the k8s tests).
//!
//! Known differences from a real server: JSON patches are refused with 415
//! (the real server accepts them), watches are not served, and pods and
//! ReplicaSets are not modelled — only the Deployment status shows them.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use flowrun_lab::emulators::kube::{KubeEmulator, Credential};
//! let kube = KubeEmulator::start().await?;
//! kube.create_namespace("my-reforge-ai");
//! let config = kube.kubeconfig(&Credential::Token(kube.admin_token().to_owned()), Some("my-reforge-ai"));
//! kube.set_never_available("codex-gh-runner");
//! # Ok(()) }
//! ```

mod api;
mod controller;
mod defaults;
mod fields;
mod quantity;
mod query;
mod resources;
mod schema;
mod ssa;
mod status;
mod store;
mod validate;

pub use store::KubeRequest;

use super::server::{lock, Server};
use super::tls::ClientCert;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{State, User, Write};

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Namespaces present at start (besides `default`, `kube-system`, `kube-public`).
    pub namespaces: Vec<String>,
    /// How long a Deployment rollout takes (default 400 ms).
    pub rollout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            rollout: Duration::from_millis(400),
        }
    }
}

/// How a kubeconfig authenticates.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `token:` inline.
    Token(String),
    /// `tokenFile:` pointing at a file holding the token.
    TokenFile(PathBuf),
    /// `client-certificate-data` / `client-key-data`.
    ClientCertData(ClientCert),
    /// `client-certificate` / `client-key` files.
    ClientCertFiles(PathBuf, PathBuf),
    /// An `exec` plugin (`client.authentication.k8s.io/v1`).
    Exec {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
}

/// A running stand-in; stops when dropped.
pub struct KubeEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
    admin: String,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

impl KubeEmulator {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(KubeOptions::default()).await
    }

    pub async fn start_with(opts: KubeOptions) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::new(opts.rollout)));
        let api = Arc::new(api::Api { state: state.clone() });
        let server = Server::start_with_client_auth(api, "kube-apiserver").await?;
        let emu = Self {
            server,
            state,
            admin: format!("admin-{}", super::random_hex(40)),
        };
        emu.add_user_with_token(&emu.admin.clone(), "kubernetes-admin", false);
        for ns in ["default", "kube-system", "kube-public"]
            .into_iter()
            .map(str::to_owned)
            .chain(opts.namespaces)
        {
            emu.create_namespace(&ns);
        }
        Ok(emu)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    pub fn ca_file(&self) -> &Path {
        self.server.ca().expect("the stand-in serves HTTPS").ca_file()
    }

    pub fn ca_pem(&self) -> &str {
        self.server.ca().expect("the stand-in serves HTTPS").ca_pem()
    }

    /// A token of a cluster administrator.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    fn add_user_with_token(&self, token: &str, name: &str, read_only: bool) {
        lock(&self.state).tokens.insert(
            token.to_owned(),
            User {
                name: name.to_owned(),
                read_only,
            },
        );
    }

    /// A new bearer token for user `name`; `read_only` users may only get and list.
    pub fn add_token(&self, name: &str, read_only: bool) -> String {
        let token = format!("{}.{}", super::random_hex(6), super::random_hex(16));
        self.add_user_with_token(&token, name, read_only);
        token
    }

    /// Forget a token (the server then answers 401 to it).
    pub fn revoke_token(&self, token: &str) {
        lock(&self.state).tokens.remove(token);
    }

    /// A client certificate for user `name` (common name) in `groups` (organizations).
    pub fn issue_client_cert(&self, name: &str, groups: &[&str]) -> ClientCert {
        let ca = self.server.ca().expect("the stand-in serves HTTPS");
        let cert = ca.issue_client(name, groups).expect("issue a client certificate");
        lock(&self.state).certs.insert(
            cert.der.clone(),
            User {
                name: name.to_owned(),
                read_only: false,
            },
        );
        cert
    }

    /// A kubeconfig (YAML) with one context, `stand-in`, for this server.
    pub fn kubeconfig(&self, cred: &Credential, namespace: Option<&str>) -> String {
        let user = match cred {
            Credential::Token(t) => json!({"token": t}),
            Credential::TokenFile(p) => json!({"tokenFile": p}),
            Credential::ClientCertData(c) => json!({
                "client-certificate-data": b64(&c.cert_pem), "client-key-data": b64(&c.key_pem)}),
            Credential::ClientCertFiles(c, k) => json!({"client-certificate": c, "client-key": k}),
            Credential::Exec { command, args, env } => json!({"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": command, "args": args,
                "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "interactiveMode": "Never", "provideClusterInfo": true}}),
        };
        let mut context = json!({"cluster": "stand-in", "user": "stand-in-user"});
        if let Some(ns) = namespace {
            context["namespace"] = json!(ns);
        }
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in", "preferences": {},
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url(),
                          "certificate-authority-data": b64(self.ca_pem())}}],
            "users": [{"name": "stand-in-user", "user": user}],
            "contexts": [{"name": "stand-in", "context": context}],
        });
        // JSON is YAML: every kubeconfig reader takes it.
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    pub fn create_namespace(&self, name: &str) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let _ = self.create(ns);
    }

    fn resource(obj: &Value) -> Result<&'static resources::Resource, String> {
        let (av, kind) = (
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        );
        resources::by_kind(av, kind).ok_or_else(|| format!("the stand-in does not serve {av} {kind}"))
    }

    /// Create `obj` as manager `flowrun-lab` (an Update, as `kubectl create` is);
    /// the created object or the server's Status body.
    pub fn create(&self, mut obj: Value) -> Result<Value, Value> {
        let res = Self::resource(&obj).map_err(|e| json!({"message": e}))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let ns = if res.namespaced {
            obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        obj["metadata"]["namespace"] = if res.namespaced { json!(ns) } else { Value::Null };
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        let w = Write {
            res,
            ns: &ns,
            name: &name,
            manager: "flowrun-lab",
            dry_run: false,
        };
        lock(&self.state)
            .update(&w, obj, true)
            .map(|(_, v)| v)
            .map_err(|f| f.body)
    }

    /// A server-side apply of `obj` by `manager`, as a client would send it.
    pub fn apply_as(&self, manager: &str, obj: Value, force: bool) -> Result<Value, Value> {
        let res = Self::resource(&obj).map_err(|e| json!({"message": e}))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        let w = Write {
            res,
            ns: &ns,
            name: &name,
            manager,
            dry_run: false,
        };
        let mut state = lock(&self.state);
        controller::tick(&mut state);
        state.apply(&w, obj, force).map(|(_, v)| v).map_err(|f| f.body)
    }

    /// A merge patch by `manager` (how `kubectl patch --type=merge` or `kubectl edit` change a field).
    pub fn merge_patch_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, Value> {
        let res = resources::by_kind(api_version, kind).ok_or_else(|| json!({"message": "not served"}))?;
        let mut state = lock(&self.state);
        controller::tick(&mut state);
        let live = state
            .get(res, ns, name)
            .ok_or_else(|| status::not_found(res, name).body)?;
        let patched = store::merge_patch(&live.value, patch, None);
        let w = Write {
            res,
            ns,
            name,
            manager,
            dry_run: false,
        };
        state.update(&w, patched, false).map(|(_, v)| v).map_err(|f| f.body)
    }

    /// The stored object (with `managedFields`), as a GET returns it.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = resources::by_kind(api_version, kind)?;
        let mut state = lock(&self.state);
        controller::tick(&mut state);
        state.get(res, ns, name).map(|s| State::render(&s.value, &s.entries))
    }

    /// Names of the stored objects of a kind in a namespace.
    pub fn names(&self, api_version: &str, kind: &str, ns: &str) -> Vec<String> {
        let Some(res) = resources::by_kind(api_version, kind) else {
            return Vec::new();
        };
        lock(&self.state)
            .list(res, Some(ns))
            .iter()
            .filter_map(|s| s.value["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Delete an object (as `kubectl delete` would, by manager-less request).
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Result<Value, Value> {
        let res = resources::by_kind(api_version, kind).ok_or_else(|| json!({"message": "not served"}))?;
        let w = Write {
            res,
            ns,
            name,
            manager: "",
            dry_run: false,
        };
        lock(&self.state).delete(&w).map_err(|f| f.body)
    }

    /// The Deployment `name` (or every one, with `*`) never gets available pods.
    pub fn set_never_available(&self, name: &str) {
        let mut state = lock(&self.state);
        state.never_available.insert(name.to_owned());
        state.objects.values_mut().for_each(|s| s.next_check = None);
    }

    pub fn set_available(&self, name: &str) {
        let mut state = lock(&self.state);
        state.never_available.remove(name);
        state.objects.values_mut().for_each(|s| s.next_check = None);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<KubeRequest> {
        lock(&self.state).log.clone()
    }

    /// Requests that changed (or would have changed) stored state: not GETs, not dry runs.
    pub fn writes(&self) -> Vec<KubeRequest> {
        self.requests().into_iter().filter(KubeRequest::is_write).collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.state).log.clear();
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next_requests(&self, n: u32) {
        self.server.fail_next_requests(n);
    }
}
