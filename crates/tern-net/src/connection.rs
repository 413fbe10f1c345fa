//! One task per connection: read and decode every complete packet in the buffer, hand them to
//! the core, then write everything the core queued for this connection in one batch.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use tern_codec::{Decoder, Packet, ProtocolVersion, QoS};
use tern_core::{ConnectionId, ConnectionInfo, Transmit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tracing::debug;

use crate::shared::Shared;

/// Read buffer size to start with; it grows for larger packets and shrinks back when idle.
const READ_BUFFER_INITIAL_BYTES: usize = 4 * 1024;
/// How long one batch may take to write before the client is deemed stalled and dropped.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes encoded before they are written out, so one busy connection cannot hog the thread.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Serves one connection over any byte stream (TCP, TLS, WebSocket) until it closes.
pub(crate) async fn run<S>(
    mut stream: S,
    peer: SocketAddr,
    info: ConnectionInfo,
    auth_profile: usize,
    shared: Rc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = shared.next_connection_id();
    debug!(conn = id.0, "connection from {peer}");
    let waker = Rc::new(Notify::new());
    shared.register(id, Rc::clone(&waker), info);
    shared
        .broker
        .borrow_mut()
        .set_auth_profile(id, auth_profile);
    let max_packet = shared.broker.borrow().config().limits.packet_size_max_bytes;
    let mut decoder = Decoder::new(ProtocolVersion::V311, max_packet);
    let mut read_buf = BytesMut::with_capacity(READ_BUFFER_INITIAL_BYTES);
    let mut write_buf = BytesMut::new();
    let mut closing = false;
    while !closing {
        tokio::select! {
            read = stream.read_buf(&mut read_buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        shared.bytes_received.set(shared.bytes_received.get() + n as u64);
                        decode_all(&shared, id, &mut decoder, &mut read_buf);
                    }
                }
            }
            () = waker.notified() => {}
        }
        closing = flush(&shared, id, &mut write_buf, &mut stream)
            .await
            .unwrap_or(true);
        if read_buf.is_empty() && read_buf.capacity() > 4 * READ_BUFFER_INITIAL_BYTES {
            read_buf = BytesMut::with_capacity(READ_BUFFER_INITIAL_BYTES);
        }
    }
    let _ = stream.shutdown().await;
    debug!(conn = id.0, "connection from {peer} closed");
    shared.unregister(id);
}

/// Feeds every complete packet in `read_buf` to the core, then wakes whoever got output.
fn decode_all(shared: &Shared, id: ConnectionId, decoder: &mut Decoder, read_buf: &mut BytesMut) {
    {
        let mut broker = shared.broker.borrow_mut();
        let now = shared.now();
        loop {
            match decoder.decode(read_buf) {
                Ok(Some(packet)) => broker.handle_packet(id, packet, now),
                Ok(None) => break,
                Err(error) => {
                    if let Some(level) = tern_codec::connect_protocol_level(read_buf) {
                        broker.hint_protocol_level(id, level);
                    }
                    broker.handle_decode_error(id, error, now);
                    read_buf.clear();
                    break;
                }
            }
        }
    }
    shared.after_input();
}

/// Whether `transmit` may overtake the sync of the state it was produced with. A QoS 0 or 1
/// delivery may: if the broker dies before its message is durable, the publisher got no
/// acknowledgement and sends it again, and a second copy is allowed at these QoS levels. A
/// QoS 2 delivery may not (a second copy would break exactly-once), nor may anything that
/// acknowledges state (PUBACK, PUBREC, PUBCOMP, CONNACK, SUBACK, ...).
fn promises_nothing(transmit: &Transmit) -> bool {
    match transmit {
        Transmit::Packet(Packet::Publish(publish)) => publish.qos != QoS::ExactlyOnce,
        Transmit::Packet(Packet::PingResp) => true,
        _ => false,
    }
}

/// Encodes and writes everything queued for `id`; returns whether the connection must close.
async fn flush<S>(
    shared: &Shared,
    id: ConnectionId,
    write_buf: &mut BytesMut,
    stream: &mut S,
) -> std::io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    loop {
        let mut close = false;
        {
            let mut broker = shared.broker.borrow_mut();
            let version = broker.protocol_version(id).unwrap_or(ProtocolVersion::V311);
            while write_buf.len() < WRITE_BATCH_BYTES_MAX {
                // Packets produced with store operations wait until those are durable, except
                // those that promise nothing about stored state.
                if !shared.may_transmit(id)
                    && !broker.peek_transmit(id).is_some_and(promises_nothing)
                {
                    break;
                }
                let transmit = broker.poll_transmit(id);
                if transmit.is_some() {
                    shared.transmitted(id);
                }
                match transmit {
                    Some(Transmit::Packet(packet)) => {
                        // A packet the codec cannot encode is a core bug; drop it rather than the connection.
                        if let Err(error) = packet.encode(version, write_buf) {
                            debug!(
                                conn = id.0,
                                "cannot encode {:?}: {error}",
                                packet.packet_type()
                            );
                        }
                    }
                    Some(Transmit::Close) => {
                        close = true;
                        break;
                    }
                    None => break,
                }
            }
        }
        if write_buf.is_empty() {
            return Ok(close);
        }
        // A client that stops reading must not pin its connection (and this task) for ever.
        // TLS and WebSocket buffer what they are given: flush pushes it to the socket.
        let write = async {
            stream.write_all(write_buf).await?;
            stream.flush().await
        };
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(written) => written?,
            Err(_) => {
                debug!(
                    conn = id.0,
                    "write stalled for {WRITE_STALL_TIMEOUT:?}: closing"
                );
                return Ok(true);
            }
        }
        shared
            .bytes_sent
            .set(shared.bytes_sent.get() + write_buf.len() as u64);
        write_buf.clear();
        if close {
            return Ok(true);
        }
        if write_buf.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
            *write_buf = BytesMut::new();
        }
    }
}
