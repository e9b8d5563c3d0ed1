//! The brokers `feature-store ingest` can read, by stream source `kind`,
//! each behind the cargo feature that compiles its client.

use feature_store_core::ingest::dead_letter::DeadLetterSink;
use feature_store_core::ingest::{ConsumerFactory, StreamConsumer};
use feature_store_core::model::{DeadLetterTarget, StreamKind, StreamSource};
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
                Err(lacking(source, kind))
            }
        }
    }

    async fn open_dead_letters(
        &self,
        source: &StreamSource,
        target: &DeadLetterTarget,
    ) -> Result<Box<dyn DeadLetterSink>> {
        match (source.kind, target) {
            (StreamKind::RedisStream, DeadLetterTarget::Stream(key)) => {
                #[cfg(feature = "redis")]
                return Ok(Box::new(feature_store_redis::RedisStreamDeadLetters::open(source, key).await?));
                #[cfg(not(feature = "redis"))]
                {
                    let _ = key;
                    Err(lacking(source, source.kind))
                }
            }
            (StreamKind::Nats, DeadLetterTarget::Subject(subject)) => {
                #[cfg(feature = "nats")]
                return Ok(Box::new(feature_store_nats::NatsDeadLetters::open(source, subject).await?));
                #[cfg(not(feature = "nats"))]
                {
                    let _ = subject;
                    Err(lacking(source, source.kind))
                }
            }
            (StreamKind::Kafka, DeadLetterTarget::Topic(topic)) => {
                #[cfg(feature = "kafka")]
                return Ok(Box::new(feature_store_kafka::KafkaDeadLetters::open(source, topic)?));
                #[cfg(not(feature = "kafka"))]
                {
                    let _ = topic;
                    Err(lacking(source, source.kind))
                }
            }
            (kind, target) => Err(Error::InvalidArgument(format!(
                "stream source \"{}\" ({kind}): dead_letter {target:?} is not on its broker (apply refuses this)",
                source.name
            ))),
        }
    }
}

fn lacking(source: &StreamSource, kind: StreamKind) -> Error {
    Error::Unsupported(format!(
        "stream source \"{}\" is {kind}, whose client this build lacks; build feature-store with the cargo feature \"{}\"",
        source.name,
        feature_of(kind)
    ))
}
