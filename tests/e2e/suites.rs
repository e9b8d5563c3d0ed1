//! The conformance suites on the backends that need a server: one test per
//! behaviour and backend, each against its own server started on a free
//! port (the embedded and memory backends run the same suites in their
//! crates).

use std::sync::Arc;

use feature_store::online::OnlineStore;
use feature_store::parquet::testing::ParquetFixture;
use feature_store::redis::{RedisConfig, RedisOnlineStore};
use feature_store_tests::moto::MotoServer;
use feature_store_tests::redis::{RedisCluster, RedisServer};

mod redis {
    use super::*;

    feature_store::online_store_suite!(async {
        let server = RedisServer::start();
        let store = RedisOnlineStore::new(RedisConfig::new(server.url())).expect("store");
        (Arc::new(store) as Arc<dyn OnlineStore>, server)
    });
}

mod redis_cluster {
    use super::*;

    feature_store::online_store_suite!(async {
        let cluster = RedisCluster::start(3);
        let store = RedisOnlineStore::new(RedisConfig::cluster(cluster.urls())).expect("store");
        (Arc::new(store) as Arc<dyn OnlineStore>, cluster)
    });
}

mod parquet_on_s3 {
    use super::*;

    feature_store::offline_store_suite!(async {
        let server = MotoServer::start();
        server.create_bucket("suite");
        ParquetFixture::at("s3://suite/data", server.options()).with_guard(server)
    });
}
