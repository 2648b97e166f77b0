//! Exit statuses, in one place: what each outcome of a command means to the
//! shell, cron or CI job that ran it (the contract in the README).

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything succeeded.
    Success,
    /// A step failed or a host was unreachable (the rest of the run went on).
    Failed,
    /// Invalid input (arguments, workflow, inventory, template): nothing ran.
    Invalid,
    /// Another run of the same workflow and inventory holds the lock.
    Locked,
    /// Stopped by a signal (its number) after the journal was left consistent.
    Interrupted(i32),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Invalid => 2,
            Self::Locked => 3,
            Self::Interrupted(signal) => 128 + signal,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        Self::from(u8::try_from(s.code()).unwrap_or(1))
    }
}
