//! `tether completions SHELL` and `tether man`: shell completions and the
//! man page, generated from the CLI definition itself (clap_complete,
//! clap_mangen) so they never drift from the real flags. README says how
//! to install them.

use clap::CommandFactory;

use crate::cli::{Cli, Context};
use crate::exit::CommandError;

/// Print shell completions (install: README, "Shell completions and man page")
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff), for `man -l -` or a man directory
#[derive(Debug, clap::Args)]
pub struct ManArgs {}

pub async fn run(_ctx: &Context, args: Args) -> Result<(), CommandError> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "tether", &mut std::io::stdout());
    Ok(())
}

pub async fn man(_ctx: &Context, _args: ManArgs) -> Result<(), CommandError> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(())
}
