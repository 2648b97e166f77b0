//! One file per subcommand, each returning `Result<ExitStatus, Error>`;
//! [`dispatch`] is the only place that knows them all.

mod completions;
mod graph;
mod history;
mod journal;
mod list;
mod plan;
mod run;
mod schema;
mod steps;
mod validate;

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::exit::ExitStatus;

pub fn dispatch(cli: Cli) -> Result<ExitStatus, Error> {
    match cli.command {
        Command::Run(args) => run::run(&args, cli.quiet),
        Command::Plan(args) => plan::plan(&args.workflow, &args.common, args.output),
        Command::Validate(args) => validate::validate(&args.workflows, &args.common),
        Command::Graph(args) => graph::graph(&args.workflow, args.format, &args.common),
        Command::List(args) => list::list(args.names),
        Command::Steps(args) => steps::steps(args.name.as_deref()),
        Command::History(args) => history::history(&args.journal, args.workflow.as_deref(), args.limit, args.output),
        Command::Show(args) => history::show(&args.journal, &args.run_id, args.output),
        Command::Forget(args) => history::forget(
            &args.journal,
            args.workflow.as_deref(),
            args.step.as_deref(),
            args.host.as_deref(),
        ),
        Command::Journal(cmd) => journal::journal(cmd),
        Command::Schema(args) => schema::schema(args.kind),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Man => completions::man(),
    }
}
