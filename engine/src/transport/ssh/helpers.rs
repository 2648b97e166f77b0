//! The helpers of one host: idle ones waiting for a request, and the count
//! of live ones, kept at most `max_sessions` so that sshd's `MaxSessions`
//! never refuses a channel. A request leases a helper for the user it runs
//! as; a lease dropped before it is released (the request failed, or its
//! deadline passed) takes its helper, and channel, with it.

use super::helper::{Facts, Helper};
use openssh::Session;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
struct Inner {
    idle: Vec<Helper>,
    /// Idle, leased, and being started.
    live: usize,
    /// What the first plain helper found out (who logs in, ...).
    facts: Option<Facts>,
}

#[derive(Default)]
pub struct Helpers {
    inner: Mutex<Inner>,
    /// Told when a helper goes back to idle.
    released: tokio::sync::Notify,
}

impl Helpers {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait up to `limit` for an idle helper of `user` (when one is expected back soon).
    pub async fn wait_idle(&self, user: Option<&str>, limit: std::time::Duration) {
        let released = self.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if self.lock().idle.iter().any(|h| h.user.as_deref() == user) {
            return;
        }
        let _ = tokio::time::timeout(limit, released).await;
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

    pub fn set_facts(&self, facts: Facts) {
        self.lock().facts = Some(facts);
    }

    pub fn facts(&self) -> Option<Facts> {
        self.lock().facts.clone()
    }

    pub fn login_user(&self) -> Option<String> {
        self.lock().facts.as_ref().map(|f| f.login_user.clone())
    }

    /// Every idle helper, to be dropped (closing their channels).
    pub fn take_all(&self) -> Vec<Helper> {
        let mut g = self.lock();
        let all = std::mem::take(&mut g.idle);
        g.live -= all.len();
        all
    }
}

/// A helper checked out for one request or batch (or a reserved place for one being started).
pub struct Lease<'a> {
    helpers: &'a Helpers,
    helper: Option<Helper>,
}

impl<'a> Lease<'a> {
    pub fn new(helpers: &'a Helpers, helper: Helper) -> Self {
        Self {
            helpers,
            helper: Some(helper),
        }
    }

    /// Count a helper about to be started.
    pub fn reserve(helpers: &'a Helpers) -> Self {
        helpers.lock().live += 1;
        Self { helpers, helper: None }
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
            self.helpers.lock().idle.push(h);
            self.helpers.released.notify_waiters();
        }
        std::mem::forget(self);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut g = self.helpers.lock();
        g.live = g.live.saturating_sub(1);
        drop(g);
        drop(self.helper.take());
    }
}
