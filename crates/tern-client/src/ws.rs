//! MQTT over WebSocket (`ws://` and `wss://`), binary frames with the `mqtt` subprotocol,
//! presented to the client as a plain byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::transport::{BoxStream, ConnectFuture, Dialer, Stream as ByteStream, Transport};

/// MQTT over WebSocket to a `ws://` or `wss://` URL (e.g. `ws://127.0.0.1:8080/mqtt`).
#[derive(Debug, Clone)]
pub struct WsTransport {
    url: String,
    tls: Option<Arc<ClientConfig>>,
    dialer: Dialer,
}

impl WsTransport {
    /// Connects to `url`; `tls` is required for `wss://` URLs.
    pub fn new(url: impl Into<String>, tls: Option<Arc<ClientConfig>>) -> Self {
        Self {
            url: url.into(),
            tls,
            dialer: Dialer::default(),
        }
    }

    /// Opens the TCP connection with `dialer` (local address, SOCKS5 proxy).
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }
}

fn ws_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

impl Transport for WsTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let mut request = self.url.as_str().into_client_request().map_err(ws_error)?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            let secure = request.uri().scheme_str() == Some("wss");
            let host = request
                .uri()
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_matches(|c| c == '[' || c == ']')
                .to_owned();
            let port = request
                .uri()
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 });
            let tcp = self.dialer.dial(&host, port).await?;
            if secure {
                let config = match &self.tls {
                    Some(config) => config.clone(),
                    None => crate::tls::client_config(None)?,
                };
                let tls = crate::tls::wrap(config, &host, tcp).await?;
                let (ws, _) = tokio_tungstenite::client_async(request, tls)
                    .await
                    .map_err(ws_error)?;
                Ok(Box::new(WsStream::new(ws)) as BoxStream)
            } else {
                let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                    .await
                    .map_err(ws_error)?;
                Ok(Box::new(WsStream::new(ws)) as BoxStream)
            }
        })
    }
}

/// A WebSocket seen as a byte stream: binary frames in, binary frames out.
struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary frame received.
    pending: Bytes,
}

impl<S> WsStream<S> {
    fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
        }
    }
}

impl<S: ByteStream> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                // Pings are answered by tungstenite itself; text frames are not MQTT.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(ws_error(error))),
            }
        }
    }
}

impl<S: ByteStream> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(ws_error)
    }
}
