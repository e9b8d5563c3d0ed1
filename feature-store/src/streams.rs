//! The brokers `feature-store ingest` can read, by stream source `kind`,
//! each behind the cargo feature that compiles its client.

use feature_store_core::ingest::{ConsumerFactory, StreamConsumer};
use feature_store_core::model::{StreamKind, StreamSource};
use feature_store_core::{Error, Result};

/// Opens consumers for every broker compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamConsumers;

/// The cargo feature compiling each broker's client.
fn feature_of(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::RedisStream => "redis",
        StreamKind::Kafka => "kafka",
        _ => "nats",
    }
}

#[async_trait::async_trait]
impl ConsumerFactory for StreamConsumers {
    async fn open(&self, source: &StreamSource, group: &str, consumer: &str) -> Result<Box<dyn StreamConsumer>> {
        match source.kind {
            #[cfg(feature = "redis")]
            StreamKind::RedisStream => {
                Ok(Box::new(feature_store_redis::RedisStreamConsumer::open(source, group, consumer).await?))
            }
            #[cfg(feature = "nats")]
            StreamKind::Nats => {
                Ok(Box::new(feature_store_nats::NatsStreamConsumer::open(source, group, consumer).await?))
            }
            #[cfg(feature = "kafka")]
            StreamKind::Kafka => Ok(Box::new(feature_store_kafka::KafkaStreamConsumer::open(source, group, consumer)?)),
            kind => {
                let _ = (group, consumer);
                Err(Error::Unsupported(format!(
                    "stream source \"{}\" is {kind}, whose client this build lacks; build feature-store with the \
                     cargo feature \"{}\"",
                    source.name,
                    feature_of(kind)
                )))
            }
        }
    }
}
