//! Users and their topics read from Redis in the layout of mosquitto-go-auth's Redis backend, so
//! a fleet kept there (THiNX's) logs in to Tern without its data being moved: a
//! [`tern_auth::UserDirectory`] the broker asks at CONNECT (see `tern_auth::directory` for what
//! the answers mean).
//!
//! For user `U` (every key after an optional prefix): `U` holds the password hash, `U:su` is
//! `true` for a superuser, and the sets `U:racls`, `U:wacls`, `U:rwacls` and `U:sacls` hold its
//! read, write, read-write and subscribe patterns; the sets `common:racls` and so on hold
//! patterns for every user. One login reads them all in one round trip; the answer (or that
//! there is no such user) is kept for `cache_secs`, for at most `cache_entries` users.
//!
//! This is an edge of the broker: its network I/O runs on a tokio runtime of its own (one
//! thread), waited on from the blocking threads the broker runs slow logins on, so the broker
//! thread never waits on Redis; each request is bounded by a timeout. The connection is made at
//! the first login and made again after any error.

mod cache;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tern_auth::{DirectoryError, DirectoryTopics, DirectoryUser, SaltEncoding, UserDirectory};
use tokio::runtime::Runtime;

use crate::cache::{Answer, Cache};

/// How long connecting to Redis, or one round trip, may take before the login is refused.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the users are and how long answers are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// Put before every key (`""`: none).
    pub key_prefix: String,
    /// How long an answer is used before Redis is asked again.
    pub cache_for: Duration,
    /// Users whose answers are kept at most.
    pub cache_entries: usize,
    /// Whether `U:su = true` makes a superuser (mosquitto-go-auth's `redis_disable_superuser`
    /// turns that off).
    pub superusers: bool,
    /// How the salts of PBKDF2 hashes are written.
    pub salt_encoding: SaltEncoding,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisAuthError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(#[from] redis::RedisError),
    /// The thread Redis is reached from cannot be started.
    #[error("cannot start the Redis client's thread: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The users of one Redis database.
pub struct RedisDirectory {
    /// Where Redis's replies are read (`None` once dropped).
    runtime: Option<Runtime>,
    client: redis::Client,
    settings: RedisSettings,
    connection: Mutex<Option<MultiplexedConnection>>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold Redis's password: only where it points.
        let info = self.client.get_connection_info();
        f.debug_struct("RedisDirectory")
            .field("server", &info.addr().to_string())
            .field("key_prefix", &self.settings.key_prefix)
            .finish_non_exhaustive()
    }
}

/// One user's keys, as read in one round trip.
type Keys = (
    Option<String>,
    Option<String>,
    [Vec<String>; 4],
    [Vec<String>; 4],
);

impl RedisDirectory {
    /// A directory on `settings.url`; nothing is connected until the first login.
    pub fn new(settings: RedisSettings) -> Result<Self, RedisAuthError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let cache = Cache::new(settings.cache_for, settings.cache_entries);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tern-redis")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            client,
            settings,
            connection: Mutex::new(None),
            cache: Mutex::new(cache),
        })
    }

    fn key(&self, name: &str, suffix: &str) -> String {
        format!("{}{name}{suffix}", self.settings.key_prefix)
    }

    /// Reads `user`'s keys, connecting first if there is no connection.
    async fn read(&self, user: &str) -> Result<Keys, redis::RedisError> {
        let held = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut connection = match held {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT));
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                *self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
                connection
            }
        };
        let mut pipe = redis::pipe();
        pipe.get(self.key(user, "")).get(self.key(user, ":su"));
        for owner in [user, "common"] {
            for set in [":racls", ":wacls", ":rwacls", ":sacls"] {
                pipe.smembers(self.key(owner, set));
            }
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut connection).await?;
        let mut values = values.into_iter();
        let mut string = || redis::from_redis_value::<Option<String>>(next(&mut values));
        let (hash, su) = (string()?, string()?);
        let mut sets = || -> Result<[Vec<String>; 4], redis::RedisError> {
            let mut set = || redis::from_redis_value::<Vec<String>>(next(&mut values));
            Ok([set()?, set()?, set()?, set()?])
        };
        let own = sets()?;
        Ok((hash, su, own, sets()?))
    }

    /// Asks Redis for `user`, within [`REDIS_TIMEOUT`]; a failure drops the connection, so the
    /// next login connects afresh.
    fn ask(&self, user: &str) -> Result<Answer, DirectoryError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| DirectoryError("the Redis client is stopped".to_owned()))?;
        let keys = runtime.block_on(async {
            tokio::time::timeout(REDIS_TIMEOUT, self.read(user))
                .await
                .map_err(|_| format!("Redis did not answer within {REDIS_TIMEOUT:?}"))?
                .map_err(|error| format!("Redis: {error}"))
        });
        let keys = keys.map_err(|why| {
            *self
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            DirectoryError(why)
        })?;
        Ok(self.record(keys))
    }

    fn record(&self, keys: Keys) -> Answer {
        let (hash, su, own, common) = keys;
        let hash = hash?;
        let [r, w, rw, s] = own;
        let [cr, cw, crw, cs] = common;
        let topics = DirectoryTopics {
            superuser: self.settings.superusers && su.as_deref() == Some("true"),
            read: [r, rw.clone(), cr, crw.clone()].concat(),
            write: [w, rw, cw, crw].concat(),
            subscribe: [s, cs].concat(),
        };
        Some(Arc::new(DirectoryUser {
            hash,
            topics: Arc::new(topics),
        }))
    }
}

/// The next reply of a pipeline (`Nil` past its end, which its shape rules out).
fn next(values: &mut std::vec::IntoIter<redis::Value>) -> redis::Value {
    values.next().unwrap_or(redis::Value::Nil)
}

impl Drop for RedisDirectory {
    fn drop(&mut self) {
        // Dropped on the broker's runtime (a reload replaces the directory), where waiting for
        // another runtime's thread is not allowed: it is told to stop and left to.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl UserDirectory for RedisDirectory {
    fn lookup(&self, user: &str) -> Result<Option<Arc<DirectoryUser>>, DirectoryError> {
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = cache().fresh(user, Instant::now()) {
            return Ok(answer);
        }
        let answer = self.ask(user)?;
        cache().insert(user, answer.clone(), Instant::now());
        Ok(answer)
    }

    fn salt_encoding(&self) -> SaltEncoding {
        self.settings.salt_encoding
    }
}
