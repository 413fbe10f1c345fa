//! One task per connection: read and decode every complete packet in the buffer, hand them to
//! the core, then write everything the core queued for this connection in one batch.

use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use tern_codec::{Decoder, ProtocolVersion};
use tern_core::{ConnectionId, Transmit};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::shared::Shared;

/// Smallest read: what a read reserves at first, and after quiet spells.
const READ_CHUNK_MIN_BYTES: usize = 512;
/// Largest read: a busy connection's reads double up to this.
const READ_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// How long one batch may take to write before the client is deemed stalled and dropped.
const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A write buffer up to this size is kept however little of it the last batch used.
const WRITE_KEEP_BYTES: usize = 1024;
/// Bytes encoded before they are written out, so one busy connection cannot hog the thread.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

pub(crate) async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: ConnectionId,
    auth_profile: usize,
    shared: Rc<Shared>,
) {
    shared.register(id);
    shared
        .broker
        .borrow_mut()
        .set_auth_profile(id, auth_profile);
    let max_packet = shared.broker.borrow().config().limits.packet_size_max_bytes;
    let mut decoder = Decoder::new(ProtocolVersion::V311, max_packet);
    // An idle connection holds no buffer at all: one is reserved when the socket is readable,
    // sized by how much the last reads brought, and dropped once everything in it is decoded.
    let mut read_buf = BytesMut::new();
    let mut read_chunk = READ_CHUNK_MIN_BYTES;
    let mut write_buf = BytesMut::new();
    let mut closing = false;
    while !closing {
        // One poll for both sources: the socket's readiness and the core's output flag, so the
        // task's resting state holds no futures of its own.
        let ready = std::future::poll_fn(|cx| match stream.poll_read_ready(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if shared.poll_woken(id, cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match ready {
            // Woken for output only: flushed below.
            None => {}
            Some(Err(_)) => break,
            Some(Ok(())) => {
                if read_buf.capacity() - read_buf.len() < read_chunk / 2 {
                    read_buf.reserve(read_chunk);
                }
                let room = read_buf.capacity() - read_buf.len();
                match stream.try_read_buf(&mut read_buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        shared
                            .bytes_received
                            .set(shared.bytes_received.get() + n as u64);
                        read_chunk = next_read_chunk(read_chunk, n, room);
                        decode_all(&shared, id, &mut decoder, &mut read_buf);
                        // A quiet connection gives its buffer back; a busy one reads on into
                        // the rest of it.
                        if read_buf.is_empty() && read_chunk == READ_CHUNK_MIN_BYTES {
                            read_buf = BytesMut::new();
                        }
                    }
                    // Readiness can be stale; the buffer reserved for nothing goes back.
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if read_buf.is_empty() {
                            read_buf = BytesMut::new();
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        closing = flush(&shared, id, &mut write_buf, &mut stream)
            .await
            .unwrap_or(true);
    }
    let _ = stream.shutdown().await;
    debug!(conn = id.0, "connection from {peer} closed");
    shared.unregister(id);
}

/// The next read size: double after a read that filled its room, halve after one that used
/// under a quarter of it.
fn next_read_chunk(chunk: usize, read: usize, room: usize) -> usize {
    if read >= room {
        (chunk * 2).min(READ_CHUNK_MAX_BYTES)
    } else if read < room / 4 {
        (chunk / 2).max(READ_CHUNK_MIN_BYTES)
    } else {
        chunk
    }
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

/// Encodes and writes everything queued for `id`; returns whether the connection must close.
async fn flush(
    shared: &Shared,
    id: ConnectionId,
    write_buf: &mut BytesMut,
    stream: &mut TcpStream,
) -> std::io::Result<bool> {
    loop {
        let mut close = false;
        {
            let mut broker = shared.broker.borrow_mut();
            let version = broker.protocol_version(id).unwrap_or(ProtocolVersion::V311);
            while write_buf.len() < WRITE_BATCH_BYTES_MAX {
                match broker.poll_transmit(id) {
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
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, stream.write_all(write_buf)).await {
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
        // Keep the buffer while batches fill it; give it back once they no longer do, so a
        // quiet connection holds (almost) nothing.
        let written = write_buf.len();
        write_buf.clear();
        if write_buf.capacity() > WRITE_KEEP_BYTES && written < write_buf.capacity() / 4 {
            *write_buf = BytesMut::new();
        }
        if close {
            return Ok(true);
        }
    }
}
