//! The helpers of one host: idle ones waiting for a request, and the count
//! of live ones, kept at most `max_sessions` so that sshd's `MaxSessions`
//! never refuses a channel. A request leases a helper for the user it runs
//! as; a lease dropped before it is released (the request failed, or its
//! deadline passed) takes its helper, and channel, with it.

use super::helper::Helper;
use super::SshTransport;
use openssh::Session;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
struct Inner {
    idle: Vec<Helper>,
    /// Idle, leased, and being started.
    live: usize,
    /// Who the login user is, as the first plain helper said.
    login_user: Option<String>,
}

#[derive(Default)]
pub struct Helpers(Mutex<Inner>);

impl Helpers {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle helper for `user` on `session`. Helpers of an older session
    /// are dropped; when none fits and `max` are live, an idle helper of
    /// another user is closed to make room. `None`: start a new one.
    pub fn take_idle(&self, session: &Arc<Session>, user: Option<&str>, max: usize) -> Option<Helper> {
        let mut g = self.lock();
        let before = g.idle.len();
        g.idle.retain(|h| Arc::ptr_eq(&h.session, session));
        g.live -= before - g.idle.len();
        if let Some(i) = g.idle.iter().position(|h| h.user.as_deref() == user) {
            return Some(g.idle.swap_remove(i));
        }
        if g.live >= max && !g.idle.is_empty() {
            g.idle.remove(0);
            g.live -= 1;
        }
        None
    }

    pub fn set_login_user(&self, user: &str) {
        self.lock().login_user = Some(user.to_owned());
    }

    pub fn login_user(&self) -> Option<String> {
        self.lock().login_user.clone()
    }

    /// Every idle helper, to be dropped (closing their channels).
    pub fn take_all(&self) -> Vec<Helper> {
        let mut g = self.lock();
        let all = std::mem::take(&mut g.idle);
        g.live -= all.len();
        all
    }
}

/// A helper checked out for one request (or a reserved place for one being started).
pub struct Lease<'a> {
    t: &'a SshTransport,
    helper: Option<Helper>,
}

impl<'a> Lease<'a> {
    pub fn new(t: &'a SshTransport, helper: Helper) -> Self {
        Self {
            t,
            helper: Some(helper),
        }
    }

    /// Count a helper about to be started.
    pub fn reserve(t: &'a SshTransport) -> Self {
        t.helpers.lock().live += 1;
        Self { t, helper: None }
    }

    #[must_use]
    pub fn fill(mut self, helper: Helper) -> Self {
        self.helper = Some(helper);
        self
    }

    pub fn helper(&mut self) -> &mut Helper {
        self.helper.as_mut().expect("a filled lease")
    }

    /// The request went well: the helper waits for the next one.
    pub fn release(mut self) {
        if let Some(h) = self.helper.take() {
            self.t.helpers.lock().idle.push(h);
        }
        std::mem::forget(self);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut g = self.t.helpers.lock();
        g.live = g.live.saturating_sub(1);
        drop(g);
        drop(self.helper.take());
    }
}
