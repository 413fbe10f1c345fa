//! MQTT over WebSocket (section 6): the HTTP upgrade (path and the `mqtt` subprotocol
//! checked), and an adapter that turns binary frames into the byte stream the connection task
//! reads, so packets need not align with frames (MQTT-6.0.0-2).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The only subprotocol MQTT speaks over WebSocket (MQTT-6.0.0-3/-4).
const SUBPROTOCOL: &str = "mqtt";

/// Performs the WebSocket upgrade on `stream`; `Err` carries a reason fit for the log.
// The handshake callback's error type (an HTTP response) is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    message_size_max: usize,
) -> Result<WsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut refusal: Option<String> = None;
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            refusal = Some(format!(
                "WebSocket path {:?} is not {path:?}",
                request.uri().path()
            ));
            return Err(error_response(StatusCode::NOT_FOUND));
        }
        let offers_mqtt = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|protocol| protocol.trim().eq_ignore_ascii_case(SUBPROTOCOL));
        if !offers_mqtt {
            refusal = Some("WebSocket client did not offer the \"mqtt\" subprotocol".to_owned());
            return Err(error_response(StatusCode::BAD_REQUEST));
        }
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(message_size_max))
        .max_frame_size(Some(message_size_max));
    let result =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await;
    match result {
        Ok(inner) => Ok(WsStream {
            inner,
            pending: Bytes::new(),
        }),
        Err(error) => Err(refusal.unwrap_or_else(|| format!("WebSocket upgrade failed: {error}"))),
    }
}

fn error_response(status: StatusCode) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    response
}

/// A WebSocket connection read and written as a byte stream: each write is one binary frame;
/// reads yield the payloads of binary frames in order.
#[derive(Debug)]
pub(crate) struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    pending: Bytes,
}

fn to_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(this.inner.poll_next_unpin(cx)) {
                // End of stream: zero bytes read.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Only binary frames may carry MQTT (MQTT-6.0.0-1): close.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame: MQTT travels in binary frames only",
                    )))
                }
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.inner.poll_ready_unpin(cx)).map_err(to_io)?;
        this.inner
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_flush_unpin(cx).map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().inner.poll_close_unpin(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(to_io(error))),
        }
    }
}
