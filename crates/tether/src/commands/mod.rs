//! One module per subcommand; each has an `Args` struct (its doc comment is
//! the help text) and `run(&Context, Args)`.

pub mod check;
pub mod completions;
pub mod deploy;
pub mod history;
pub mod hosts;
pub mod init;
pub mod plan;
pub mod rehearse;
pub mod rollback;
pub mod snapshots;
pub mod status;
