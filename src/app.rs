//! What every connection shares: the directory, the change hub, the
//! authenticator, the configuration and the framer's limits. The listeners
//! ([`crate::net`]) build it and hand it to each [`crate::session`]; neither
//! imports the other's internals through it.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::net::ServerError;
use crate::protocol::Limits;
use crate::replication::Hub;
use crate::store::{Directory, SledConfig, StoreConfig};

/// What every connection shares.
pub struct App {
    /// The configuration the server started with.
    pub config: Config,
    /// The directory.
    pub store: Directory,
    /// The change fan-out to UPDATE streams: the directory's own hub
    /// ([`Directory::hub`]), which its writes publish to; sessions
    /// subscribe here.
    pub hub: Arc<Hub>,
    /// Logins.
    pub auth: Arc<Authenticator>,
    /// The framer's limits after login.
    pub limits: Limits,
}

/// The store's settings from the configuration.
pub fn store_config(config: &Config) -> StoreConfig {
    StoreConfig::sled(SledConfig {
        path: config.data_dir.clone(),
        cache_capacity: config.cache_capacity_mb.saturating_mul(1024 * 1024),
        compression: config.compression,
        compression_level: config.compression_level,
        verify_on_open: config.verify_on_open,
    })
}

impl App {
    /// Open the store (sled in `config.data_dir`) and assemble everything
    /// else around it.
    pub fn open(config: Config) -> Result<App, ServerError> {
        let store_config = store_config(&config);
        Self::open_on(config, &store_config)
    }

    /// The same on the in-memory engine (nothing on disk, gone with the
    /// process): for tests and fuzzing of whole sessions.
    pub fn in_memory(config: Config) -> Result<App, ServerError> {
        Self::open_on(config, &StoreConfig::memory())
    }

    fn open_on(config: Config, store_config: &StoreConfig) -> Result<App, ServerError> {
        let hub = Hub::with_limits(config.max_stream_pending, config.max_stream_pending_bytes);
        let store = Directory::open(store_config, &config.store_groups(), hub.clone())
            .map_err(|source| ServerError::Store { path: config.data_dir.display().to_string(), source })?;
        let limits = Limits { max_line: config.max_line, max_literal: config.max_message, max_message: config.max_message };
        Ok(App {
            auth: Arc::new(Authenticator::with_options(
                &config.users,
                config.max_hash_checks,
                crate::auth::SaslOptions {
                    scram_sha256: config.scram_sha256,
                    scram_sha1: config.scram_sha1,
                    scram_iterations: config.scram_iterations,
                },
            )),
            hub,
            store,
            limits,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Identity;

    /// The hub sessions subscribe to is the one the directory's writes
    /// publish to: a stream registered on `App::hub` hears a write made
    /// through `App::store` and nothing else.
    #[tokio::test]
    async fn the_streams_hub_is_the_directorys() {
        let config = Config::parse("listen = [\"127.0.0.1:0\"]\n[[users]]\nname = \"a\"\npassword = \"p\"\nrole = \"admin\"\n").unwrap();
        let app = App::in_memory(config).unwrap();
        let stream = app.hub.subscribe(&[]);
        app.store.activate(&Identity::default(), b"user.a", b"be1!p", b"a\tlrs\t").await.unwrap();
        let names: Vec<Vec<u8>> = stream.subscription().take().unwrap().iter().map(|n| n.to_vec()).collect();
        assert_eq!(names, [b"user.a".to_vec()]);
        assert!(Arc::ptr_eq(&app.hub, app.store.hub()));
    }
}
