//! Where a cluster is and how to authenticate to it, read from a kubeconfig
//! the way kubectl reads it (client-go `clientcmd`): `kubeconfig` loads
//! exactly one file; otherwise `$KUBECONFIG` is a colon-separated list merged
//! (the first file to set a name or `current-context` wins; missing files are
//! skipped); otherwise `~/.kube/config`. Relative paths are relative to the
//! file that holds them; `*-data` fields override their file forms, `token`
//! overrides `tokenFile`. Inline tokens and keys are registered as secrets
//! as soon as they are read. Nothing here talks to the network or runs the
//! `exec` plugin: that happens when the step first needs credentials.

use base64::Engine as _;
use flowrun_engine::secrets::Masker;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// PEM material from a `*-data` field or from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    Data(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    pub fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::Data(d) => Ok(d.clone()),
            Self::File(p) => std::fs::read(p).map_err(|e| format!("cannot read the {what} `{}`: {e}", p.display())),
        }
    }
}

/// An `exec` credential plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub api_version: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub interactive_mode: String,
    pub provide_cluster_info: bool,
    pub install_hint: Option<String>,
    /// The directory of the kubeconfig (a relative command path is relative to it).
    pub dir: PathBuf,
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// An inline `token` (a secret).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// `client-certificate(-data)` and `client-key(-data)`.
    pub client_cert: Option<(Pem, Pem)>,
    pub exec: Option<Exec>,
}

/// One context of a kubeconfig, resolved to its cluster and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The kubeconfig file(s), for messages.
    pub files: String,
    pub context: String,
    pub cluster: String,
    pub user: String,
    pub server: String,
    pub namespace: Option<String>,
    pub ca: Option<Pem>,
    pub insecure: bool,
    pub tls_server_name: Option<String>,
    pub auth: Auth,
    /// The cluster entry as written (for exec plugins that ask for cluster info).
    pub cluster_info: Value,
}

impl Resolved {
    /// Which credential a request carries, in words (never its value).
    pub fn credential(&self) -> String {
        let a = &self.auth;
        let what = if a.exec.is_some() {
            format!(
                "the `exec` plugin `{}`",
                a.exec.as_ref().map_or("", |e| e.command.as_str())
            )
        } else if a.token.is_some() {
            "the bearer token in `token`".to_owned()
        } else if let Some(f) = &a.token_file {
            format!("the bearer token in `tokenFile` `{}`", f.display())
        } else if a.client_cert.is_some() {
            "the client certificate".to_owned()
        } else {
            "no credentials".to_owned()
        };
        format!(
            "{what} of user `{}` (context `{}` in {})",
            self.user, self.context, self.files
        )
    }
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| format!("`{what}` is not base64: {e}"))
}

/// A kubeconfig file parsed, with the directory its relative paths are relative to.
struct File {
    path: PathBuf,
    doc: Value,
}

fn read_file(path: &Path) -> Result<File, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the kubeconfig `{}`: {e}", path.display()))?;
    let doc: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(&text).map_err(|e| {
            let first = e.to_string();
            format!(
                "the kubeconfig `{}` is not valid YAML: {}",
                path.display(),
                first.lines().next().unwrap_or("")
            )
        })?
    };
    if !doc.is_object() {
        return Err(format!("the kubeconfig `{}` is not a mapping", path.display()));
    }
    Ok(File {
        path: path.to_owned(),
        doc,
    })
}

/// The files to read: the `kubeconfig` parameter, `$KUBECONFIG`, or `~/.kube/config`.
fn files(explicit: Option<&Path>) -> Result<Vec<File>, String> {
    if let Some(p) = explicit {
        return Ok(vec![read_file(p)?]);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let found: Vec<File> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| read_file(p))
            .collect::<Result<_, _>>()?;
        if found.is_empty() {
            return Err(format!(
                "none of the kubeconfig files in `$KUBECONFIG` exists ({})",
                paths
                    .iter()
                    .map(|p| format!("`{}`", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Ok(found);
    }
    let default = flowrun_engine::paths::home().join(".kube/config");
    if !default.exists() {
        return Err(format!(
            "no kubeconfig: `{}` does not exist and `$KUBECONFIG` is not set (give `kubeconfig`, or see docs/kubernetes.md)",
            default.display()
        ));
    }
    Ok(vec![read_file(&default)?])
}

/// The named entry `name` of list `list` (`clusters`, `users`, `contexts`), from the first file that has it.
fn entry<'a>(files: &'a [File], list: &str, inner: &str, name: &str) -> Option<(&'a Map<String, Value>, &'a File)> {
    files.iter().find_map(|f| {
        f.doc[list].as_array()?.iter().find_map(|e| {
            (e["name"].as_str() == Some(name))
                .then(|| e[inner].as_object())
                .flatten()
                .map(|m| (m, f))
        })
    })
}

fn names(files: &[File], list: &str) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .flat_map(|f| f.doc[list].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    out.dedup();
    out
}

fn resolve_path(file: &File, p: &str) -> PathBuf {
    let p = flowrun_engine::paths::expand_home(p);
    if p.is_absolute() {
        p
    } else {
        file.path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Read the kubeconfig and resolve `context` (default: `current-context`).
pub fn load(explicit: Option<&Path>, context: Option<&str>) -> Result<Resolved, String> {
    let files = files(explicit)?;
    let shown = files
        .iter()
        .map(|f| format!("`{}`", f.path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let shown = format!("kubeconfig {shown}");
    let context = match context {
        Some(c) => c.to_owned(),
        None => files
            .iter()
            .find_map(|f| f.doc["current-context"].as_str().filter(|s| !s.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| format!("{shown} sets no `current-context`: give the step a `context`"))?,
    };
    let Some((ctx, _)) = entry(&files, "contexts", "context", &context) else {
        let known = names(&files, "contexts");
        let list = if known.is_empty() {
            "it has none".to_owned()
        } else {
            format!(
                "contexts: {}",
                known.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            )
        };
        return Err(format!("{shown} has no context `{context}` ({list})"));
    };
    let cluster_name =
        opt_str(ctx, "cluster").ok_or_else(|| format!("context `{context}` in {shown} names no `cluster`"))?;
    let user_name = opt_str(ctx, "user").unwrap_or("");
    let (cluster, cfile) = entry(&files, "clusters", "cluster", cluster_name)
        .ok_or_else(|| format!("context `{context}` names cluster `{cluster_name}`, which {shown} does not define"))?;
    let (server, ca) = server_and_ca(cluster, cfile, cluster_name, &shown)?;
    let auth = match user_name {
        "" => Auth::default(),
        u => match entry(&files, "users", "user", u) {
            Some((user, ufile)) => auth(user, ufile, u)?,
            None => {
                return Err(format!(
                    "context `{context}` names user `{u}`, which {shown} does not define"
                ))
            }
        },
    };
    Ok(Resolved {
        files: shown,
        context: context.clone(),
        cluster: cluster_name.to_owned(),
        user: user_name.to_owned(),
        server,
        namespace: opt_str(ctx, "namespace").map(str::to_owned),
        ca,
        insecure: cluster
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        tls_server_name: opt_str(cluster, "tls-server-name").map(str::to_owned),
        auth,
        cluster_info: Value::Object(cluster.clone()),
    })
}

/// A cluster's `server` URL and CA.
fn server_and_ca(
    cluster: &Map<String, Value>,
    cfile: &File,
    cluster_name: &str,
    shown: &str,
) -> Result<(String, Option<Pem>), String> {
    let server = opt_str(cluster, "server")
        .ok_or_else(|| format!("cluster `{cluster_name}` in {shown} has no `server`"))?
        .trim_end_matches('/')
        .to_owned();
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        return Err(format!(
            "cluster `{cluster_name}`: `server` must be an http(s) URL, got `{server}`"
        ));
    }
    let ca = match (
        opt_str(cluster, "certificate-authority-data"),
        opt_str(cluster, "certificate-authority"),
    ) {
        (Some(d), _) => Some(Pem::Data(b64(d, "certificate-authority-data")?)),
        (None, Some(p)) => Some(Pem::File(resolve_path(cfile, p))),
        (None, None) => None,
    };
    if cluster.get("proxy-url").is_some_and(|v| !v.is_null()) {
        return Err(format!(
            "cluster `{cluster_name}` sets `proxy-url`, which flowrun does not support: use `HTTPS_PROXY`"
        ));
    }
    Ok((server, ca))
}

fn auth(user: &Map<String, Value>, file: &File, name: &str) -> Result<Auth, String> {
    let masker = Masker::global();
    if let Some(provider) = user.get("auth-provider").filter(|v| !v.is_null()) {
        let p = provider["name"].as_str().unwrap_or("?");
        return Err(format!(
            "user `{name}` uses the `auth-provider` `{p}`, which kubectl removed in 1.26: use an `exec` plugin (for GKE, `gke-gcloud-auth-plugin`; see docs/kubernetes.md)"
        ));
    }
    if opt_str(user, "username").is_some() || opt_str(user, "password").is_some() {
        return Err(format!("user `{name}` uses a username and password (basic auth), which Kubernetes no longer accepts: use a token, a client certificate or an `exec` plugin"));
    }
    let token = opt_str(user, "token").map(str::to_owned);
    if let Some(t) = &token {
        masker.add(t);
    }
    let cert = match (
        opt_str(user, "client-certificate-data"),
        opt_str(user, "client-certificate"),
    ) {
        (Some(d), _) => Some(Pem::Data(b64(d, "client-certificate-data")?)),
        (None, Some(p)) => Some(Pem::File(resolve_path(file, p))),
        (None, None) => None,
    };
    let key = match (opt_str(user, "client-key-data"), opt_str(user, "client-key")) {
        (Some(d), _) => {
            let pem = b64(d, "client-key-data")?;
            masker.add(&String::from_utf8_lossy(&pem));
            masker.add(d);
            Some(Pem::Data(pem))
        }
        (None, Some(p)) => Some(Pem::File(resolve_path(file, p))),
        (None, None) => None,
    };
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(format!(
                "user `{name}` gives a client certificate without its key, or a key without its certificate"
            ))
        }
    };
    let exec = match user.get("exec").filter(|v| !v.is_null()) {
        Some(e) => Some(exec(e, file, name)?),
        None => None,
    };
    Ok(Auth {
        token,
        token_file: opt_str(user, "tokenFile").map(|p| resolve_path(file, p)),
        client_cert,
        exec,
    })
}

fn exec(e: &Value, file: &File, user: &str) -> Result<Exec, String> {
    let command = e["command"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("user `{user}`: `exec` needs a `command`"))?;
    let api_version = e["apiVersion"].as_str().unwrap_or("");
    if !matches!(
        api_version,
        "client.authentication.k8s.io/v1" | "client.authentication.k8s.io/v1beta1"
    ) {
        return Err(format!(
            "user `{user}`: `exec.apiVersion` must be `client.authentication.k8s.io/v1` (or `v1beta1`), got `{api_version}`"
        ));
    }
    let args = e["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("user `{user}`: `exec.args` must be strings"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let env = e["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match (v["name"].as_str(), v["value"].as_str()) {
            (Some(n), Some(val)) => Ok((n.to_owned(), val.to_owned())),
            _ => Err(format!("user `{user}`: each `exec.env` entry needs `name` and `value`")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let interactive_mode = e["interactiveMode"].as_str().unwrap_or("IfAvailable").to_owned();
    if !matches!(interactive_mode.as_str(), "Never" | "IfAvailable" | "Always") {
        return Err(format!(
            "user `{user}`: `exec.interactiveMode` must be `Never`, `IfAvailable` or `Always`, got `{interactive_mode}`"
        ));
    }
    Ok(Exec {
        api_version: api_version.to_owned(),
        command: command.to_owned(),
        args,
        env,
        interactive_mode,
        provide_cluster_info: e["provideClusterInfo"].as_bool().unwrap_or(false),
        install_hint: e["installHint"].as_str().map(str::to_owned),
        dir: file.path.parent().unwrap_or(Path::new(".")).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443/", certificate-authority: ca.pem}
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: runners}
- name: exec
  context: {cluster: c1, user: u2}
users:
- name: u1
  user: {token: "tok-abc-123", tokenFile: "t.txt"}
- name: u2
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: gke-gcloud-auth-plugin
      installHint: "install it"
      provideClusterInfo: true
"#;

    #[test]
    fn contexts_paths_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "config", CONFIG);
        let r = load(Some(&p), None).unwrap();
        assert_eq!(r.server, "https://10.0.0.1:6443");
        assert_eq!(r.namespace.as_deref(), Some("runners"));
        assert_eq!(r.ca, Some(Pem::File(dir.path().join("ca.pem"))));
        assert_eq!(r.auth.token.as_deref(), Some("tok-abc-123"));
        assert_eq!(r.auth.token_file, Some(dir.path().join("t.txt")));
        assert!(
            Masker::global().contains_secret("x tok-abc-123 y"),
            "an inline token is a secret"
        );
        assert!(!r.credential().contains("tok-abc"), "{}", r.credential());
        let e = load(Some(&p), Some("exec")).unwrap();
        assert_eq!(e.auth.exec.as_ref().unwrap().command, "gke-gcloud-auth-plugin");
        let err = load(Some(&p), Some("prod")).unwrap_err();
        assert!(err.contains("has no context `prod` (contexts: `dev`, `exec`)"), "{err}");
    }

    #[test]
    fn legacy_auth_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "config",
            "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {auth-provider: {name: gcp}}}]\n",
        );
        let err = load(Some(&p), None).unwrap_err();
        assert!(err.contains("gke-gcloud-auth-plugin"), "{err}");
    }
}
