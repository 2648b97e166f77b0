//! What the API steps (`proxmox_vm`, `gitlab_runner`, `github_runner`) share:
//! an HTTPS client with a custom CA, bounded retries and error messages
//! taken from the API's own answer, which never shows a token.

pub mod client;
mod errors;

pub use client::{segment, ApiClient, ApiError, Body, ClientOptions, Req, Response, RetryPolicy};
