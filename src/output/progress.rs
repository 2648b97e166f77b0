//! Live progress on a terminal: one bar per host on stderr with the steps
//! done of its total and the step running now with its elapsed time, kept
//! below the result lines (indicatif's `MultiProgress` clears the bars,
//! lets a line be printed, and redraws them, so lines never garble). Only
//! when stderr is a terminal, not in CI, not with `-q` or JSON output:
//! elsewhere the plain lines are all there is.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether live progress is wanted: a terminal on stderr, not CI, not dumb.
pub fn wanted() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    std::io::stderr().is_terminal() && !ci && !dumb
}

/// Hosts shown with a bar each; more share one bar.
pub const MAX_BARS: usize = 12;

#[derive(Default)]
struct HostState {
    /// Running instances: label (step, item) and when it started.
    running: Vec<(String, String, Instant)>,
    /// Steps with a finished instance and none running.
    done: Vec<String>,
}

struct Inner {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    /// One bar for all hosts.
    summary: bool,
    hosts: Mutex<HashMap<String, HostState>>,
    stop: AtomicBool,
}

/// The bars of a run; dropped or [`Progress::finish`]ed, they disappear.
pub struct Progress {
    inner: Arc<Inner>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Progress {
    /// Bars for these hosts, each with its number of steps. Past
    /// [`MAX_BARS`] hosts one bar sums them all (more bars than a terminal
    /// has rows would scroll and garble).
    pub fn new(hosts: &[(String, u64)]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let summary = (hosts.len() > MAX_BARS).then(|| {
            let total: u64 = hosts.iter().map(|(_, n)| n).sum();
            (format!("{} hosts", hosts.len()), total)
        });
        let shown: Vec<(String, u64)> = summary.clone().map_or_else(|| hosts.to_vec(), |s| vec![s]);
        let width = shown.iter().map(|(h, _)| h.chars().count()).max().unwrap_or(4).min(30);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:<{width}.bold}} [{{bar:24.cyan/blue}}] {{pos:>3}}/{{len:<3}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = shown
            .iter()
            .map(|(h, total)| {
                let b = multi.add(
                    ProgressBar::new(*total)
                        .with_style(style.clone())
                        .with_prefix(h.clone()),
                );
                b.set_message("waiting");
                (h.clone(), b)
            })
            .collect();
        let inner = Arc::new(Inner {
            multi,
            bars,
            summary: summary.is_some(),
            hosts: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        // Elapsed times move even when no event comes.
        let tick = inner.clone();
        let ticker = std::thread::spawn(move || {
            while !tick.stop.load(Ordering::Relaxed) {
                tick.refresh();
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Self {
            inner,
            ticker: Mutex::new(Some(ticker)),
        }
    }

    pub fn started(&self, step: &str, host: &str, item: Option<&str>) {
        let mut hosts = self.inner.lock();
        let st = hosts.entry(host.to_owned()).or_default();
        let label = item.map_or_else(|| step.to_owned(), |i| format!("{step} ({i})"));
        st.running.push((step.to_owned(), label, Instant::now()));
        st.done.retain(|d| d != step);
        drop(hosts);
        self.inner.refresh();
    }

    pub fn finished(&self, step: &str, host: &str, item: Option<&str>, handler: bool) {
        let mut hosts = self.inner.lock();
        let st = hosts.entry(host.to_owned()).or_default();
        let label = item.map_or_else(|| step.to_owned(), |i| format!("{step} ({i})"));
        if let Some(i) = st.running.iter().position(|(s, l, _)| s == step && *l == label) {
            st.running.remove(i);
        }
        let still = st.running.iter().any(|(s, _, _)| s == step);
        if !handler && !still && !st.done.iter().any(|d| d == step) {
            st.done.push(step.to_owned());
        }
        drop(hosts);
        self.inner.refresh();
    }

    /// Run `f` (which prints lines) with the bars out of the way.
    pub fn print<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inner.multi.suspend(f)
    }

    /// Remove the bars for good (before the recap).
    pub fn finish(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self
            .ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
        for b in self.inner.bars.values() {
            b.finish_and_clear();
        }
        let _ = self.inner.multi.clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refresh(&self) {
        let hosts = self.lock();
        if self.summary {
            if let Some(bar) = self.bars.values().next() {
                let done: usize = hosts.values().map(|h| h.done.len()).sum();
                bar.set_position(u64::try_from(done).unwrap_or(0).min(bar.length().unwrap_or(u64::MAX)));
                bar.set_message(summary_message(&hosts));
            }
            return;
        }
        for (name, bar) in &self.bars {
            let Some(st) = hosts.get(name) else { continue };
            bar.set_position(
                u64::try_from(st.done.len())
                    .unwrap_or(0)
                    .min(bar.length().unwrap_or(u64::MAX)),
            );
            bar.set_message(message(st));
        }
    }
}

/// What all hosts do now: how many instances run, and the longest-running one.
fn summary_message(hosts: &HashMap<String, HostState>) -> String {
    let running: usize = hosts.values().map(|h| h.running.len()).sum();
    let longest = hosts
        .iter()
        .flat_map(|(h, st)| st.running.iter().map(move |(_, l, t)| (h, l, t)))
        .min_by_key(|(_, _, t)| **t);
    match longest {
        None => "waiting".into(),
        Some((host, label, since)) => {
            let label: String = label.chars().take(40).collect();
            format!("{running} running; longest: {label} [{host}] {}", elapsed(*since))
        }
    }
}

fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// What a host does now: its longest-running instance and how long it runs.
fn message(st: &HostState) -> String {
    let Some((_, label, since)) = st.running.iter().min_by_key(|(_, _, t)| *t) else {
        return if st.done.is_empty() {
            "waiting".into()
        } else {
            "idle".into()
        };
    };
    let more = st.running.len() - 1;
    let mut label: String = label.chars().take(48).collect();
    if more > 0 {
        label.push_str(&format!(" (+{more})"));
    }
    format!("{label} {}", elapsed(*since))
}
