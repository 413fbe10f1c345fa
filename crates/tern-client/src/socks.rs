//! A SOCKS5 client handshake (RFC 1928, with RFC 1929 user name and password): the proxy is
//! asked to connect to the broker by name, so it also resolves it (`socks5h://`).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
const CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// A SOCKS5 proxy, optionally with a user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Socks5Proxy {
    /// Proxy host.
    pub host: String,
    /// Proxy port (1080 by convention).
    pub port: u16,
    /// User name and password, when the proxy wants them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Socks5Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("Socks5Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

fn refused(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, message.into())
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("SOCKS5 {what} longer than 255 bytes"),
    )
}

impl Socks5Proxy {
    /// Asks the proxy, over `stream`, to connect to `host:port`; on success the stream carries
    /// the connection to the broker.
    pub(crate) async fn handshake(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> io::Result<()> {
        let method = if self.credentials.is_some() {
            USER_PASS
        } else {
            NO_AUTH
        };
        stream.write_all(&[VERSION, 1, method]).await?;
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).await?;
        if reply[0] != VERSION || reply[1] == NO_ACCEPTABLE_METHOD || reply[1] != method {
            return Err(refused("the SOCKS5 proxy accepts none of our methods"));
        }
        if let Some((user, password)) = &self.credentials {
            let user_len = u8::try_from(user.len()).map_err(|_| too_long("user name"))?;
            let password_len = u8::try_from(password.len()).map_err(|_| too_long("password"))?;
            let mut request = vec![1, user_len];
            request.extend_from_slice(user.as_bytes());
            request.push(password_len);
            request.extend_from_slice(password.as_bytes());
            stream.write_all(&request).await?;
            stream.read_exact(&mut reply).await?;
            if reply[1] != 0 {
                return Err(refused(
                    "the SOCKS5 proxy refused the user name or password",
                ));
            }
        }
        let host_len = u8::try_from(host.len()).map_err(|_| too_long("host name"))?;
        let mut request = vec![VERSION, CONNECT, 0, ATYP_DOMAIN, host_len];
        request.extend_from_slice(host.as_bytes());
        request.extend_from_slice(&port.to_be_bytes());
        stream.write_all(&request).await?;
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await?;
        if head[1] != 0 {
            return Err(refused(format!(
                "the SOCKS5 proxy could not connect to {host}:{port} (reply {})",
                head[1]
            )));
        }
        // The bound address the proxy reports is of no use here; skip it and its port.
        let address_len = match head[3] {
            ATYP_IPV4 => 4,
            ATYP_IPV6 => 16,
            ATYP_DOMAIN => usize::from(stream.read_u8().await?),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("SOCKS5 reply with address type {other}"),
                ))
            }
        };
        let mut bound = vec![0u8; address_len + 2];
        stream.read_exact(&mut bound).await?;
        Ok(())
    }
}
