//! Redis and Redis Cluster online store.
//!
//! Configure in `feature_store.yaml`:
//!
//! ```yaml
//! online_store:
//!   type: redis
//!   connection_string: redis://localhost:6379     # or rediss://, or host:port,password=…,ssl=true
//!   redis_type: redis                              # or redis_cluster (several seeds, comma-separated)
//!   timeout: 5s                                    # per call; connect_timeout, retries, key_prefix, expire
//! ```
//!
//! A read of any number of views and entities is one `MGET` (in a cluster, one
//! per slot, all sent at once over each node's connection).
//! Writes run a Lua script so that a row with an older event time than the
//! stored one is skipped atomically. The key layout, value format, encodings
//! and expiry are described in [`layout`].
#![warn(missing_docs)]

mod config;
mod error;
pub mod layout;
mod store;
mod stream_consumer;

pub use config::RedisConfig;
pub use error::Error;
pub use store::RedisOnlineStore;
pub use stream_consumer::{RedisStreamConsumer, RedisStreamDeadLetters};
