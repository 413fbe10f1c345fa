//! `[auth.<name>.redis]`: a profile's users and their topics read from Redis in
//! mosquitto-go-auth's layout (docs/fleet.md, "Switching from mosquitto-go-auth"). The table is
//! always understood; using it needs a build with the `redis-auth` feature.

use std::sync::Arc;

use serde::Deserialize;
use tern_auth::UserDirectory;

/// `[auth.<name>.redis]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisAuthConfig {
    /// `redis://[user:password@]host:port/db`.
    url: String,
    /// Put before every key (default: none).
    #[serde(default)]
    key_prefix: String,
    /// How long an answer of Redis is used before asking again, in seconds (default 30).
    #[serde(default = "default_cache_secs")]
    cache_secs: u64,
    /// Users whose answers are kept at most (default 10000).
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
    /// Whether `<user>:su = "true"` makes a superuser (default true).
    #[serde(default = "yes")]
    superusers: bool,
    /// How PBKDF2 salts are written: "base64" (default) or "utf-8".
    #[serde(default)]
    salt_encoding: SaltEncodingConfig,
}

fn default_cache_secs() -> u64 {
    30
}

fn default_cache_entries() -> usize {
    10_000
}

fn yes() -> bool {
    true
}

/// `salt_encoding = "base64" | "utf-8"`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
enum SaltEncodingConfig {
    #[default]
    #[serde(rename = "base64")]
    Base64,
    #[serde(rename = "utf-8")]
    Utf8,
}

/// The directory `config` describes, for profile `name`.
#[cfg(feature = "redis-auth")]
pub(crate) fn directory(
    name: &str,
    config: &RedisAuthConfig,
) -> anyhow::Result<Arc<dyn UserDirectory>> {
    use anyhow::Context;
    let settings = tern_redis_auth::RedisSettings {
        url: config.url.clone(),
        key_prefix: config.key_prefix.clone(),
        cache_for: std::time::Duration::from_secs(config.cache_secs),
        cache_entries: config.cache_entries,
        superusers: config.superusers,
        salt_encoding: match config.salt_encoding {
            SaltEncodingConfig::Base64 => tern_auth::SaltEncoding::Base64,
            SaltEncodingConfig::Utf8 => tern_auth::SaltEncoding::Utf8,
        },
    };
    let directory = tern_redis_auth::RedisDirectory::new(settings)
        .with_context(|| format!("[auth.{name}.redis]"))?;
    Ok(Arc::new(directory))
}

/// Without the feature, a profile that asks for Redis is refused at start-up.
#[cfg(not(feature = "redis-auth"))]
pub(crate) fn directory(
    name: &str,
    config: &RedisAuthConfig,
) -> anyhow::Result<Arc<dyn UserDirectory>> {
    let _ = (
        &config.url,
        &config.key_prefix,
        config.cache_secs,
        config.cache_entries,
        config.superusers,
        config.salt_encoding,
    );
    anyhow::bail!(
        "[auth.{name}.redis]: this tern was built without Redis support \
         (build it with `--features redis-auth`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_describes_every_setting() {
        let text = include_str!("../../../tern.example.toml");
        let table: String = text
            .lines()
            .skip_while(|line| *line != "# [auth.default.redis]")
            .skip(1)
            .take_while(|line| *line != "#")
            .filter_map(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        let config: RedisAuthConfig = toml::from_str(&table).expect("the example's table");
        assert_eq!(config.url, "redis://127.0.0.1:6379/0");
        assert_eq!(table.lines().count(), 6, "every setting, once: {table}");
        assert_eq!(config.cache_secs, default_cache_secs());
        assert_eq!(config.cache_entries, default_cache_entries());
        assert!(config.superusers);
    }
}
