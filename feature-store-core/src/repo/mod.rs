//! The declarative repo: `feature_store.yaml` plus any number of definition files.

pub(crate) mod config;
mod definitions;
mod options;
pub mod yaml_limits;

pub use config::{CONFIG_FILE, OfflineStoreConfig, OnlineStoreConfig, RegistryConfig, RepoConfig};
pub use definitions::{Defined, Definitions, load_definitions};
pub use options::{BackendOptions, parse_size};

use std::path::Path;

use crate::Result;

/// Reads a repo folder: its config and every definition file in it.
pub fn load_repo(dir: impl AsRef<Path>) -> Result<(RepoConfig, Definitions)> {
    let dir = dir.as_ref();
    let config = RepoConfig::load(dir)?;
    let defs = load_definitions(dir)?;
    Ok((config, defs))
}
