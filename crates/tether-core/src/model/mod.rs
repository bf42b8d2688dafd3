//! The values tether deals in, each validated once when it is parsed and
//! trusted everywhere after: host names, tags, addresses, SSH users,
//! machine-ids, pinned host keys, store paths, deploy ids, tokens, goals
//! and host selectors.
//!
//! The bottom layer of the crate (docs/architecture.md): it depends on
//! nothing else here but the text helpers.

mod error;
mod goal;
pub(crate) mod host_key;
mod ids;
mod names;
mod selector;
mod store_path;

pub use error::ValueError;
pub use goal::{Goal, TrialMode};
pub use host_key::{HostKey, HostKeyError, KeyType};
pub use ids::{DeployId, Token};
pub use names::{Address, HostName, MachineId, SshUser, Tag, DEFAULT_SSH_PORT};
pub use selector::{Selector, SelectorError, Term, Unmatched};
pub use store_path::{Closure, StorePath};
