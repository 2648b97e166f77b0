//! Quick requests — probes and file operations, short by nature — of one
//! host share helpers instead of each holding a channel: they queue per
//! `become` user, and a driver task sends what is queued to one helper as a
//! batch (every frame in one write, so one round trip for all; the helper
//! runs them one after another) and hands each answer back as it arrives.
//! Instances that become ready together (the steps after a directory is
//! made) thus probe the host together, and a host needs one or two helpers
//! where it needed one per concurrent request. A second driver (another
//! helper) starts only when many requests wait.
//!
//! The driver is a task of its own, so a request that is cancelled (its
//! deadline, an interrupt) leaves the others' batch alone; when every
//! request of a running batch has been given up, the driver drops its
//! helper, which closes the channel as a cancelled lease does.

use super::helper::{Failure, Request};
use super::Inner;
use crate::transport::{ExecOutput, TransportError};
use openssh::Session;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use tokio::sync::oneshot;

/// At most this many requests, or about this many bytes, in one batch.
const BATCH_REQUESTS: usize = 16;
const BATCH_BYTES: usize = 1 << 20;
/// Another driver starts when more than this many requests per driver wait.
const WAITING_PER_DRIVER: usize = BATCH_REQUESTS;

struct Job {
    script: String,
    stdin: Option<Vec<u8>>,
    timeout: u64,
    shared: bool,
    tx: oneshot::Sender<Answer>,
}

enum Answer {
    Done(ExecOutput),
    /// The helper failed under the request (on this session).
    Failed(Failure, Arc<Session>),
    /// No helper could be had (the host is unreachable, sudo refused...).
    Error(TransportError),
}

#[derive(Default)]
struct Line {
    jobs: VecDeque<Job>,
    /// Drivers running or starting.
    drivers: usize,
}

/// The waiting quick requests of one host, per `become` user.
#[derive(Default)]
pub struct Queue(Mutex<HashMap<Option<String>, Line>>);

impl Queue {
    fn lock(&self) -> MutexGuard<'_, HashMap<Option<String>, Line>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `job`; whether a driver must be started for it.
    fn push(&self, user: Option<&str>, job: Job, max_drivers: usize) -> bool {
        let mut g = self.lock();
        let line = g.entry(user.map(str::to_owned)).or_default();
        line.jobs.push_back(job);
        let start =
            line.drivers == 0 || (line.jobs.len() > WAITING_PER_DRIVER * line.drivers && line.drivers < max_drivers);
        if start {
            line.drivers += 1;
        }
        start
    }

    /// Whether a driver runs for `user` (its helper is soon idle again).
    pub fn driving(&self, user: Option<&str>) -> bool {
        self.lock().get(&user.map(str::to_owned)).is_some_and(|l| l.drivers > 0)
    }

    /// The next batch; empty when nothing waits, and then this driver is done.
    fn take(&self, user: &Option<String>) -> Vec<Job> {
        let mut g = self.lock();
        let Some(line) = g.get_mut(user) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < BATCH_REQUESTS && (batch.is_empty() || bytes < BATCH_BYTES) {
            let Some(job) = line.jobs.pop_front() else { break };
            if job.tx.is_closed() {
                continue;
            }
            bytes += job.script.len() + job.stdin.as_ref().map_or(0, Vec::len);
            batch.push(job);
        }
        if batch.is_empty() {
            line.drivers -= 1;
        }
        batch
    }

    /// A driver cannot get a helper: what waits gets the error, if no other driver remains.
    fn fail(&self, user: &Option<String>, e: &TransportError) {
        let jobs = {
            let mut g = self.lock();
            let Some(line) = g.get_mut(user) else { return };
            line.drivers -= 1;
            if line.drivers > 0 {
                return;
            }
            std::mem::take(&mut line.jobs)
        };
        for j in jobs {
            let _ = j.tx.send(Answer::Error(e.clone()));
        }
    }
}

impl Inner {
    /// Run a quick request in a batch. As with a helper of its own, a
    /// request whose helper died before it started goes to a new one, once.
    pub(super) async fn run_quick(
        self: &Arc<Self>,
        user: Option<&str>,
        req: Request<'_>,
    ) -> Result<ExecOutput, TransportError> {
        for attempt in 0..2 {
            self.stats.add_command();
            let (tx, rx) = oneshot::channel();
            let job = Job {
                script: req.script.to_owned(),
                stdin: req.stdin.map(<[u8]>::to_vec),
                timeout: req.timeout,
                shared: req.shared,
                tx,
            };
            if self.quick.push(user, job, self.opts.max_sessions) {
                let me = self.clone();
                let user = user.map(str::to_owned);
                tokio::spawn(async move { me.drive(user).await });
            }
            match rx.await {
                Ok(Answer::Done(out)) => return Ok(out),
                Ok(Answer::Error(e)) => return Err(e),
                Ok(Answer::Failed(Failure::Invalid(m), _)) => return Err(TransportError::Failed(m)),
                Ok(Answer::Failed(Failure::Died { started }, session)) => {
                    if let Some(end) = self.after_death(&session, started, attempt).await {
                        return end;
                    }
                }
                Err(_) => {
                    return Err(TransportError::Failed(format!(
                        "ssh to `{}`: the request was dropped unanswered",
                        self.target.name
                    )))
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Send batches to one helper until nothing waits.
    async fn drive(self: Arc<Self>, user: Option<String>) {
        let Ok(_permit) = self.permits.acquire().await else {
            self.quick
                .fail(&user, &TransportError::Failed("the SSH transport is closed".into()));
            return;
        };
        let mut kept = None;
        loop {
            let jobs = self.quick.take(&user);
            if jobs.is_empty() {
                break;
            }
            let mut lease = match kept.take() {
                Some(l) => l,
                None => match self.lease(user.as_deref()).await {
                    Ok(l) => l,
                    Err(e) => {
                        for j in jobs {
                            let _ = j.tx.send(Answer::Error(e.clone()));
                        }
                        self.quick.fail(&user, &e);
                        return;
                    }
                },
            };
            let (reqs, txs): (Vec<_>, Vec<_>) = jobs
                .into_iter()
                .map(|j| ((j.script, j.stdin, j.timeout, j.shared), Some(j.tx)))
                .unzip();
            let reqs: Vec<Request<'_>> = reqs
                .iter()
                .map(|(script, stdin, timeout, shared)| Request {
                    script,
                    stdin: stdin.as_deref(),
                    timeout: *timeout,
                    shared: *shared,
                })
                .collect();
            let txs = Mutex::new(txs);
            let helper = lease.helper();
            let session = helper.session.clone();
            let batch = helper.run_batch(&reqs, |i, r| {
                let tx = txs.lock().unwrap_or_else(PoisonError::into_inner)[i].take();
                if let Some(tx) = tx {
                    let _ = tx.send(match r {
                        Ok(out) => Answer::Done(out),
                        Err(f) => Answer::Failed(f, session.clone()),
                    });
                }
            });
            let sent = std::time::Instant::now();
            let alive = tokio::select! {
                biased;
                alive = batch => alive,
                () = abandoned(&txs) => false,
            };
            tracing::trace!(
                "`{}`: {} quick requests in one batch, {:?}",
                self.target.name,
                reqs.len(),
                sent.elapsed()
            );
            if alive {
                kept = Some(lease);
            }
        }
        if let Some(l) = kept {
            l.release();
        }
    }
}

/// Ready when every request still waiting for its answer has been given up.
async fn abandoned(txs: &Mutex<Vec<Option<oneshot::Sender<Answer>>>>) {
    std::future::poll_fn(|cx| {
        let mut g = txs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waiting = 0;
        let mut open = false;
        for tx in g.iter_mut().flatten() {
            waiting += 1;
            if tx.poll_closed(cx).is_pending() {
                open = true;
            }
        }
        if waiting == 0 || open {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
