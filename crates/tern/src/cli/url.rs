//! `-L URL`: mqtt(s)://[username[:password]@]host[:port]/topic, as mosquitto's clients take
//! it, and ws(s):// for MQTT over WebSocket.

use anyhow::{bail, Context};

/// The URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

/// A parsed `-L` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub(crate) scheme: Scheme,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) topic: String,
}

impl BrokerUrl {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("-L {url}: expected mqtt(s)://[user[:password]@]host[:port]/topic")
        })?;
        let scheme = match scheme {
            "mqtt" => Scheme::Mqtt,
            "mqtts" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => bail!("-L {url}: unsupported scheme {other}:// (use mqtt, mqtts, ws or wss)"),
        };
        let Some((authority, topic)) = rest.split_once('/') else {
            bail!("-L {url}: the URL names no topic (…/topic)");
        };
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
                None => (Some(credentials.to_owned()), None),
            },
        };
        let (host, port) = split_host_port(address).with_context(|| format!("-L {url}"))?;
        Ok(Self {
            scheme,
            username,
            password,
            host,
            port,
            topic: topic.to_owned(),
        })
    }
}

/// Splits `host[:port]` (`[v6][:port]` for IPv6).
pub(crate) fn split_host_port(address: &str) -> anyhow::Result<(String, Option<u16>)> {
    let parse_port = |port: &str| {
        port.parse::<u16>()
            .with_context(|| format!("bad port {port:?}"))
    };
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed [ in the host")?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(parse_port(port)?),
            None if after.is_empty() => None,
            None => bail!("unexpected {after:?} after the host"),
        };
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match address.split_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (address, None),
    };
    if host.is_empty() {
        bail!("no host");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::{BrokerUrl, Scheme};

    #[test]
    fn parses_mosquittos_url_form() {
        let url = BrokerUrl::parse("mqtt://user:pa:ss@example.org:1884/a/b/#");
        let url = url.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.scheme, Scheme::Mqtt);
        assert_eq!(url.username.as_deref(), Some("user"));
        assert_eq!(url.password.as_deref(), Some("pa:ss"));
        assert_eq!((url.host.as_str(), url.port), ("example.org", Some(1884)));
        assert_eq!(url.topic, "a/b/#");
        let url = BrokerUrl::parse("mqtts://[::1]/t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port),
            (Scheme::Mqtts, "::1", None)
        );
        assert_eq!(url.username, None);
        for bad in [
            "mqtt://host",
            "http://host/t",
            "mqtt://:1883/t",
            "mqtt://h:x/t",
            "host/t",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
