//! The values tether deals in, each validated once when it is parsed and
//! trusted everywhere after: host names, tags, addresses, SSH users,
//! machine-ids, pinned host keys, store paths, deploy ids, tokens, goals
//! host selectors and the subvolumes, datasets and units of a host's state.
//!
//! The bottom layer of the crate (docs/architecture.md): it depends on
//! nothing else here but the text helpers.

mod error;
mod goal;
pub(crate) mod host_key;
mod ids;
mod names;
mod selector;
mod state;
mod store_path;
mod sudo;

pub use error::ValueError;
pub use goal::{Goal, TrialMode};
pub use host_key::{HostKey, HostKeyError, KeyType};
pub use ids::{DeployId, Token};
pub use names::{Address, HostName, MachineId, SshUser, Tag, DEFAULT_SSH_PORT};
pub use selector::{Selector, SelectorError, Term, Unmatched};
pub use state::{Dataset, StatePath, UnitName, BTRFS_SNAPSHOT_DIR, ZFS_FAILED_DATASET};
pub use store_path::{Closure, ClosureSigners, StorePath};
pub use sudo::{SudoMode, SudoPassword};
