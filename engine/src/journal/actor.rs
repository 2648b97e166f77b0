//! The journal thread: the one connection, fed by a channel. Reads are
//! answered at once (queued writes committed first); writes are batched into
//! one transaction per burst of queued messages.

use super::backend::{Backend, Write};
use super::JournalError;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Mutex};

pub(super) type Reply<T> = mpsc::Sender<Result<T, JournalError>>;
pub(super) type Job = Box<dyn FnOnce(&mut dyn Backend) + Send>;

pub(super) enum Msg {
    Write(Write),
    /// A read (or a lock): queued writes are committed first.
    Ask(Job),
    Flush(Reply<()>),
}

/// What a lock wait can be interrupted with.
#[derive(Default)]
pub(super) struct Cancel {
    pub(super) flag: AtomicBool,
    /// Asks the server to cancel a blocking lock wait (PostgreSQL).
    pub(super) server: Mutex<Option<Box<dyn Fn() + Send>>>,
}

/// The journal thread: answer reads at once; batch writes into one
/// transaction per burst of queued messages. After a failed write, every
/// later flush reports it: the run stops, and what was not committed is
/// done again by the next run.
pub(super) fn serve(
    b: &mut dyn Backend,
    rx: &mpsc::Receiver<Msg>,
    failed: &tokio::sync::watch::Sender<Option<String>>,
) {
    let mut error: Option<String> = None;
    let mut writes: Vec<Write> = Vec::new();
    let commit = |b: &mut dyn Backend, writes: &mut Vec<Write>, error: &mut Option<String>| {
        if writes.is_empty() {
            return;
        }
        if error.is_none() {
            if let Err(e) = b.write(writes) {
                tracing::error!("{e}");
                *error = Some(e.to_string());
                failed.send_replace(Some(e.to_string()));
            }
        }
        writes.clear();
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(m) = next.take() {
            taken += 1;
            match m {
                Msg::Write(w) => writes.push(w),
                Msg::Ask(job) => {
                    commit(b, &mut writes, &mut error);
                    job(b);
                }
                Msg::Flush(r) => {
                    commit(b, &mut writes, &mut error);
                    let _ = r.send(match &error {
                        None => Ok(()),
                        Some(e) => Err(JournalError::Sql(format!(
                            "{}; steps finished after this were not recorded and run again next time",
                            e.trim_start_matches("journal: ")
                        ))),
                    });
                }
            }
            if taken < 5000 {
                next = rx.try_recv().ok();
            }
        }
        commit(b, &mut writes, &mut error);
    }
}
