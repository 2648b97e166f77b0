//! Command-line arguments. `flowrun NAME ...` is shorthand for `flowrun run NAME ...`.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "flowrun",
    version,
    about = "Run YAML workflows of idempotent infrastructure steps, journaled so re-runs skip done work"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only failures (and the recap when the run failed): for cron.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a workflow.
    Run(RunArgs),
    /// Show the DAG as parallel phases, and what the journal would skip.
    Plan(PlanArgs),
    /// Load and check workflows without touching any host.
    Validate(ValidateArgs),
    /// Print the step graph.
    Graph(GraphArgs),
    /// List the workflows in ./workflows.
    List(ListArgs),
    /// Describe the built-in steps, or one of them: parameters and outputs.
    Steps(StepsArgs),
    /// List past runs.
    History(HistoryArgs),
    /// Show one run, step by step.
    Show(ShowArgs),
    /// Forget journal records so those steps run again.
    Forget(ForgetArgs),
    /// Journal upkeep: migrate, copy, prune, stats.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Print the JSON Schema of workflow or inventory files, for editors.
    Schema(SchemaArgs),
    /// Print a shell completion script (workflow names from ./workflows included).
    Completions(CompletionsArgs),
    /// Print the man page (roff): `flowrun man | man -l -`.
    Man,
}

/// Where the journal is, and its key.
#[derive(Args, Debug, Clone, Default)]
pub struct JournalArgs {
    /// Journal: a file (SQLite) or `postgres://USER@HOST:PORT/DB?sslmode=...` (shared);
    /// default: $FLOWRUN_JOURNAL, else a file in the user's state directory.
    #[arg(long, value_name = "PATH|URL")]
    pub journal: Option<String>,
    /// The key that encrypts secret outputs and keys fingerprints: controllers
    /// sharing a journal share it (created 0600 when missing); default: beside
    /// a SQLite journal, or in the state directory.
    #[arg(long, value_name = "FILE", env = "FLOWRUN_JOURNAL_KEY_FILE")]
    pub journal_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Bring the journal's schema to this flowrun's version.
    Migrate(JournalArgs),
    /// Copy a journal into an empty one (e.g. SQLite to PostgreSQL).
    Copy(CopyArgs),
    /// Remove the history of old runs (never the last success of an instance).
    Prune(PruneArgs),
    /// Counts, sizes and schema version.
    Stats(JournalArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The journal to copy: `sqlite://PATH`, a file, or a `postgres://` URL.
    #[arg(long, value_name = "PATH|URL")]
    pub from: String,
    /// The empty journal to copy into.
    #[arg(long, value_name = "PATH|URL")]
    pub to: String,
    /// The key of the source journal (both journals use it afterwards).
    #[arg(long, value_name = "FILE", env = "FLOWRUN_JOURNAL_KEY_FILE")]
    pub journal_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove runs that started longer ago than this (`90d`, `12h`).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
    /// Count what would go, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub journal: JournalArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only the names, one a line, without loading the files (for scripts and completion).
    #[arg(long)]
    pub names: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// Which files the schema describes.
    #[arg(value_enum)]
    pub kind: SchemaKind,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum SchemaKind {
    Workflow,
    Inventory,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Inventory file (Ansible YAML structure); default: $FLOWRUN_INVENTORY, else only localhost.
    #[arg(short, long, env = "FLOWRUN_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Extra variable, highest precedence (repeatable).
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// Only hosts matching this pattern.
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    #[command(flatten)]
    pub journal: JournalArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A workflow file, or the name of one in ./workflows.
    pub workflow: String,
    #[command(flatten)]
    pub common: Common,
    /// Only steps with one of these tags (comma-separated; `always` steps run too).
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip steps with one of these tags.
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Show the diffs of what changes (or would).
    #[arg(long)]
    pub diff: bool,
    /// Check journaled steps for drift too, and repair it.
    #[arg(long)]
    pub verify: bool,
    /// Ignore the journal: run every step.
    #[arg(long)]
    pub force: bool,
    /// When another run holds the lock, wait in line up to this long (`10m`, `1h`) instead of exiting 3.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait_lock: Option<std::time::Duration>,
    /// How many step instances run at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub forks: u16,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write Prometheus metrics about the run here (node_exporter textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub workflow: String,
    #[command(flatten)]
    pub common: Common,
    /// Output format on stdout (`json`: every node and instance with its prediction).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[arg(required = true)]
    pub workflows: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    pub workflow: String,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    #[command(flatten)]
    pub common: Common,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct StepsArgs {
    /// A step name (`apt`, `proxmox_vm`, ...).
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub journal: JournalArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub run_id: String,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub journal: JournalArgs,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long)]
    pub step: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub journal: JournalArgs,
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "plan",
    "validate",
    "graph",
    "list",
    "steps",
    "history",
    "show",
    "forget",
    "schema",
    "completions",
    "man",
    "journal",
    "help",
];

/// The clap command, for the completion and man page generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parse argv, turning `flowrun NAME ...` into `flowrun run NAME ...`.
pub fn parse() -> Cli {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The first argument that is not a global flag decides.
    if let Some(i) = args.iter().skip(1).position(|a| {
        let s = a.to_string_lossy();
        !(s == "-q" || s == "--quiet" || s.starts_with("-v") || s == "--verbose")
    }) {
        let first = args[i + 1].to_string_lossy().into_owned();
        if !first.starts_with('-') && !SUBCOMMANDS.contains(&first.as_str()) {
            args.insert(i + 1, "run".into());
        }
    }
    Cli::parse_from(args)
}
