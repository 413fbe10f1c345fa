//! One task per connection: read and decode every complete packet in the buffer, hand them to
//! the core, then write everything the core queued for this connection in one batch.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tern_codec::{Decoder, Packet, ProtocolVersion, QoS};
use tern_core::{ConnectionId, ConnectionInfo, Transmit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedWriteHalf;
use tracing::debug;

use crate::gate::Admitted;
use crate::shared::Shared;

/// Smallest read: what a quiet connection reads with (on the stack), and after quiet spells.
const READ_CHUNK_MIN_BYTES: usize = 512;
/// Largest read: a busy connection's reads double up to this.
const READ_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// A write buffer up to this size is kept however little of it the last batch used.
const WRITE_KEEP_BYTES: usize = 1024;
/// Bytes encoded before they are written out, so one busy connection cannot hog the thread.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Serves one connection over any byte stream (TCP, TLS, WebSocket) until it closes. With a
/// `direct` write half (plain TCP), other tasks may write this connection's deliveries while
/// the broker is quiet.
pub(crate) async fn run<S>(
    mut stream: S,
    peer: SocketAddr,
    info: ConnectionInfo,
    auth_profile: usize,
    shared: Rc<Shared>,
    direct: Option<Rc<OwnedWriteHalf>>,
    admitted: Admitted,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = shared.next_connection_id();
    debug!(conn = id.0, "connection from {peer}");
    let info = ConnectionInfo {
        peer_address: Some(peer.ip()),
        ..info
    };
    // Plain TCP: the socket, for quiet reads that peek (below).
    let peekable: Option<Rc<OwnedWriteHalf>> = direct.clone();
    shared.register(id, info, direct);
    shared
        .broker
        .borrow_mut()
        .set_auth_profile(id, auth_profile);
    let max_packet = shared.broker.borrow().config().limits.packet_size_max_bytes;
    let mut decoder = Decoder::new(ProtocolVersion::V311, max_packet);
    // An idle connection holds no read buffer: a quiet connection reads into the stack and
    // keeps only what arrived; a busy one reads into a buffer sized by its last reads.
    let mut read_buf = BytesMut::new();
    let mut read_chunk = READ_CHUNK_MIN_BYTES;
    let mut write_buf = BytesMut::new();
    let mut closing = false;
    // The first socket failure, logged and counted once when the connection ends.
    let mut failure: Option<SocketFailure> = None;
    // Complete packets left in `read_buf` when flow control paused reading part way through it.
    let mut unhandled = false;
    while !closing {
        // Bytes peeked (and taken into `read_buf`) that are still in the socket.
        let mut peeked = 0;
        let input = if unhandled && !shared.reading_paused(id) {
            Input::Unhandled
        } else {
            // One poll for both sources, the socket and the core's output flag, so the task's
            // resting state holds no futures of its own.
            std::future::poll_fn(|cx| {
                // A publisher held back past its window is not read: what it sends waits in
                // the socket, and TCP's own flow control stops it. The core's letting it go
                // wakes this task.
                if shared.reading_paused(id) {
                    return match shared.poll_woken(id, cx) {
                        true => Poll::Ready(Input::Output),
                        false => Poll::Pending,
                    };
                }
                // While the broker is quiet, a small read peeks and leaves the bytes in the
                // socket until this input's deliveries are written: taking them out is what
                // makes the kernel acknowledge them, and over loopback that acknowledgement
                // (most of such a read's time) would otherwise come before the deliveries.
                let small = read_buf.is_empty() && read_chunk == READ_CHUNK_MIN_BYTES;
                let peek_socket = peekable
                    .as_deref()
                    .filter(|_| small && shared.quiet_at(std::time::Instant::now()))
                    .map(|write| write.as_ref());
                let read = match peek_socket {
                    Some(socket) => poll_peek(socket, cx, &mut read_buf).map_ok(|n| {
                        peeked = n;
                        (n, READ_CHUNK_MIN_BYTES)
                    }),
                    None => poll_read(&mut stream, cx, &mut read_buf, read_chunk, max_packet),
                };
                match read {
                    Poll::Ready(result) => Poll::Ready(Input::Read(result)),
                    Poll::Pending if shared.poll_woken(id, cx) => Poll::Ready(Input::Output),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        let handle = match input {
            // Woken for output only: flushed below.
            Input::Output => false,
            Input::Unhandled => true,
            Input::Read(Ok((0, _))) => break,
            Input::Read(Err(error)) => {
                failure = Some(SocketFailure::new("read", error));
                break;
            }
            Input::Read(Ok((n, room))) => {
                shared
                    .bytes_received
                    .set(shared.bytes_received.get() + n as u64);
                read_chunk = next_read_chunk(read_chunk, n, room);
                true
            }
        };
        if handle {
            let handled = decode_all(&shared, id, &admitted, &mut decoder, &mut read_buf);
            unhandled = handled.paused;
            if read_buf.is_empty() && read_chunk == READ_CHUNK_MIN_BYTES {
                read_buf = BytesMut::new();
            }
            if handled.others_woken {
                // Deliveries first: the tasks this input woke write their PUBLISHes before
                // this connection writes its own PUBACK (as a broker writing in place
                // would), so an acknowledgement never delays a delivery.
                yield_behind_woken().await;
            }
        }
        closing = match flush(&shared, id, &mut write_buf, &mut stream).await {
            Ok(closing) => closing,
            Err(error) => {
                failure = Some(SocketFailure::new("write", error));
                true
            }
        };
        // After this connection's own reply too: nothing this input caused waits on the take.
        if let Some(socket) = peekable.as_deref().filter(|_| peeked > 0 && !closing) {
            if let Err(error) = crate::tcp::discard_peeked(socket.as_ref(), peeked) {
                failure = Some(SocketFailure::new("read", error));
                closing = true;
            }
        }
    }
    // The last holders of the write half other than the stream, so shutting down reaches it.
    drop(peekable);
    shared.detach_writer(id);
    // A broken socket is not closed politely; a stalled one is tried, within the bound: a peer
    // that stopped reading must not hold back the will, the session's expiry and the slot.
    if failure.as_ref().is_none_or(SocketFailure::stalled) {
        let close = shared.timeouts.close;
        let failed = match tokio::time::timeout(close, stream.shutdown()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(_) => Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer took nothing for {close:?}"),
            )),
        };
        if let (None, Some(error)) = (&failure, failed) {
            failure = Some(SocketFailure::new("close", error));
        }
    }
    if let Some(failure) = failure {
        shared.socket_error(id, failure.during, &failure.error);
    }
    debug!(conn = id.0, "connection from {peer} closed");
    shared.unregister(id);
}

/// What ended a connection's socket, for the log.
struct SocketFailure {
    /// The operation: read, write or close.
    during: &'static str,
    error: std::io::Error,
}

impl SocketFailure {
    fn new(during: &'static str, error: std::io::Error) -> Self {
        Self { during, error }
    }

    /// A write that made no progress for the stall timeout: the socket itself still works.
    fn stalled(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::TimedOut
    }
}

/// Polls one read; on success, the bytes read and the room they were read into.
fn poll_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut std::task::Context<'_>,
    read_buf: &mut BytesMut,
    read_chunk: usize,
    packet_size_max: u32,
) -> Poll<std::io::Result<(usize, usize)>> {
    if read_buf.is_empty() && read_chunk == READ_CHUNK_MIN_BYTES {
        // Quiet: read into the stack and keep only what arrived (uninitialised: the socket
        // fills what is read, and zeroing 512 bytes per quiet read is a cost for nothing).
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_MIN_BYTES];
        let mut scratch = ReadBuf::uninit(&mut scratch);
        let poll = Pin::new(stream).poll_read(cx, &mut scratch);
        return poll.map_ok(|()| {
            read_buf.extend_from_slice(scratch.filled());
            (scratch.filled().len(), READ_CHUNK_MIN_BYTES)
        });
    }
    if read_buf.capacity() - read_buf.len() < read_chunk / 2 {
        match large_packet_len(read_buf, packet_size_max) {
            Some(total) => grow_towards(read_buf, read_chunk, total),
            None => read_buf.reserve(read_chunk),
        }
    }
    let room = read_buf.capacity() - read_buf.len();
    // `read_buf` has no state of its own: a fresh one per poll loses nothing.
    std::pin::pin!(stream.read_buf(read_buf))
        .poll(cx)
        .map_ok(|n| (n, room))
}

/// The length of the packet begun in `read_buf` (whose complete packets have been taken), when
/// it is larger than a read chunk and within the packet size limit.
fn large_packet_len(read_buf: &BytesMut, packet_size_max: u32) -> Option<usize> {
    let frame = tern_codec::parse_frame(read_buf, packet_size_max).ok()??;
    (frame.total_len > READ_CHUNK_MAX_BYTES).then_some(frame.total_len)
}

/// Grows `read_buf` for a large packet of `total` bytes: doubling, as it would anyway (so a
/// client that declares a large packet and sends little gets little), but never past the
/// packet. The message keeps the buffer it was read into alive for as long as any receiver
/// holds it, so the last step makes a buffer of exactly the packet's size, and the memory a
/// large message holds is what it is charged for (docs/design/backpressure.md), not up to
/// twice that.
fn grow_towards(read_buf: &mut BytesMut, read_chunk: usize, total: usize) {
    let capacity = (read_buf.capacity() * 2)
        .max(read_buf.len() + read_chunk)
        .min(total);
    if capacity > read_buf.capacity() {
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(read_buf);
        *read_buf = grown;
    }
}

/// Polls a peek into the stack; on success the bytes are copied into `read_buf` but stay in the
/// socket until [`crate::tcp::discard_peeked`] takes them out.
fn poll_peek(
    socket: &tokio::net::TcpStream,
    cx: &mut std::task::Context<'_>,
    read_buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_MIN_BYTES];
    let mut scratch = ReadBuf::uninit(&mut scratch);
    socket.poll_peek(cx, &mut scratch).map_ok(|n| {
        read_buf.extend_from_slice(scratch.filled());
        n
    })
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

/// Lets every task already woken run before this one goes on: the task wakes itself, which
/// puts it at the back of the thread's run queue (unlike `tokio::task::yield_now`, which waits
/// for the next poll of the sockets).
async fn yield_behind_woken() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// What a connection's task got in one turn.
enum Input {
    /// A read from the socket: the bytes read and the room they were read into.
    Read(std::io::Result<(usize, usize)>),
    /// The core has output for it (or let its reading go on).
    Output,
    /// Reading may go on, and packets read before it was paused wait in the read buffer.
    Unhandled,
}

/// What [`decode_all`] did.
struct Handled {
    /// Whether a connection other than this one was woken.
    others_woken: bool,
    /// Whether flow control paused reading this connection, leaving packets in the buffer.
    paused: bool,
}

/// Feeds every complete packet in `read_buf` to the core, up to one after which flow control
/// pauses reading the connection, then wakes whoever got output.
fn decode_all(
    shared: &Shared,
    id: ConnectionId,
    admitted: &Admitted,
    decoder: &mut Decoder,
    read_buf: &mut BytesMut,
) -> Handled {
    // One clock read serves the core's time and the busy-poll bookkeeping.
    let at = std::time::Instant::now();
    let mut paused = false;
    {
        let mut broker = shared.broker.borrow_mut();
        let now = shared.time_at(at);
        loop {
            match decoder.decode(read_buf) {
                Ok(Some(packet)) => {
                    // Its first packet is its CONNECT (the core closes it otherwise).
                    admitted.connect_received();
                    broker.handle_packet(id, packet, now);
                    if broker.any_reading_paused() && broker.reading_paused(id) {
                        paused = true;
                        break;
                    }
                }
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
    Handled {
        others_woken: shared.after_input_at(Some(id), at),
        paused,
    }
}

/// Whether `transmit` may overtake the sync of the state it was produced with. A QoS 0 or 1
/// delivery may: if the broker dies before its message is durable, the publisher got no
/// acknowledgement and sends it again, and a second copy is allowed at these QoS levels. A
/// QoS 2 delivery may not (a second copy would break exactly-once), nor may anything that
/// acknowledges state (PUBACK, PUBREC, PUBCOMP, CONNACK, SUBACK, ...).
fn promises_nothing(transmit: &Transmit) -> bool {
    match transmit {
        Transmit::Publish(publish) => publish.qos != QoS::ExactlyOnce,
        Transmit::Packet(packet) => matches!(**packet, Packet::PingResp),
        Transmit::Close => false,
    }
}

/// What stopped [`encode_queued`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Nothing more is queued.
    Drained,
    /// The batch is full; more is queued.
    Full,
    /// The next packet waits for the store.
    Waiting,
    /// The next thing queued is the close (taken only when asked to).
    Close,
}

/// Encodes into `write_buf` what the core queued for `id`, up to one batch. Packets produced
/// with store operations stop it until those are durable, except those that promise nothing
/// about stored state. With `take_close`, the close is taken from the queue (the caller then
/// closes); without it, it is left there for the connection's own task.
pub(crate) fn encode_queued(
    shared: &Shared,
    id: ConnectionId,
    write_buf: &mut BytesMut,
    take_close: bool,
) -> Stop {
    let mut broker = shared.broker.borrow_mut();
    let mut encoder = shared.encoder.borrow_mut();
    let version = broker.protocol_version(id).unwrap_or(ProtocolVersion::V311);
    while write_buf.len() < WRITE_BATCH_BYTES_MAX {
        let next = broker.peek_transmit(id);
        if !shared.may_transmit(id) && !next.is_some_and(promises_nothing) {
            return Stop::Waiting;
        }
        if !take_close && matches!(next, Some(Transmit::Close)) {
            return Stop::Close;
        }
        let transmit = broker.poll_transmit(id);
        if transmit.is_some() {
            shared.transmitted(id);
        }
        match transmit {
            Some(Transmit::Close) => return Stop::Close,
            Some(transmit) => {
                // What the codec cannot encode is a core bug; drop it, not the connection.
                if let Err(error) = encoder.encode(&transmit, version, write_buf) {
                    shared.encode_error(id, &transmit, &error);
                }
            }
            None => return Stop::Drained,
        }
    }
    Stop::Full
}

/// Encodes and writes everything queued for `id`; returns whether the connection must close.
/// A write that makes no progress for the stall timeout fails with `TimedOut`.
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
        // What a direct write could not finish goes out first.
        if let Some(carry) = shared.take_carry(id) {
            write_buf.extend_from_slice(&carry);
        }
        let close = encode_queued(shared, id, write_buf, true) == Stop::Close;
        if write_buf.is_empty() {
            return Ok(close);
        }
        // Most batches go out at once; only one the socket cannot take arms the stall timer.
        let (written_now, done) = write_now(stream, write_buf).await?;
        if !done {
            // Nothing may be written past the unwritten rest of this batch meanwhile.
            shared.pause_direct_writes(id, true);
            let stall = shared.timeouts.write_stall;
            let written = write_rest(stream, &write_buf[written_now..], stall).await;
            shared.pause_direct_writes(id, false);
            if let Err(error) = written {
                if error.kind() == std::io::ErrorKind::TimedOut {
                    // A client that stops reading must not pin its connection (and this task,
                    // and the publishers it holds back) for ever.
                    shared.socket_stalled(id);
                }
                return Err(error);
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
        // The client has taken this batch: retained messages waiting for room can follow.
        shared.resume_retained_feeds();
    }
}

/// Writes and flushes all of `bytes`, failing with `TimedOut` once the stream has taken nothing
/// for `stall`: a client that reads slowly is given time as long as it takes something. TLS and
/// WebSocket streams take what they are given into a buffer of their own; their flush, which
/// pushes it to the socket, is given `stall` as a whole.
async fn write_rest<S>(stream: &mut S, mut bytes: &[u8], stall: Duration) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let stalled = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("stalled for {stall:?}: the client stopped reading"),
        )
    };
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, stream.write(bytes)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(stalled()),
        }
    }
    match tokio::time::timeout(stall, stream.flush()).await {
        Ok(flushed) => flushed,
        Err(_) => Err(stalled()),
    }
}

/// Writes and flushes as much of `bytes` as the stream takes without waiting; returns how many
/// bytes were written and whether they were all written and flushed.
async fn write_now<S>(stream: &mut S, bytes: &[u8]) -> std::io::Result<(usize, bool)>
where
    S: AsyncWrite + Unpin,
{
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while written < bytes.len() {
            match Pin::new(&mut *stream).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Ready(Ok((written, false))),
            }
        }
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok((written, true))),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Ready(Ok((written, false))),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PUBLISH header declaring `total` bytes in all, and `body` of them.
    fn large_packet_start(total: usize, body: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x30, 0x80 | ((total - 4) % 128) as u8]);
        buf.extend_from_slice(&[
            0x80 | (((total - 4) >> 7) % 128) as u8,
            ((total - 4) >> 14) as u8,
        ]);
        buf.extend_from_slice(&vec![0u8; body]);
        buf
    }

    #[test]
    fn a_large_packet_ends_in_a_buffer_of_its_own_size() {
        let total = 512 * 1024 + 100;
        let mut buf = large_packet_start(total, 1000);
        assert_eq!(large_packet_len(&buf, u32::MAX), Some(total));
        let mut capacities = Vec::new();
        while buf.len() < total {
            grow_towards(&mut buf, READ_CHUNK_MAX_BYTES, total);
            capacities.push(buf.capacity());
            let room = (buf.capacity() - buf.len()).min(total - buf.len());
            buf.extend_from_slice(&vec![0u8; room]);
        }
        // Doubling, as with the bytes that arrive, and exactly the packet at the end.
        assert_eq!(capacities.last(), Some(&total), "{capacities:?}");
        assert!(capacities
            .windows(2)
            .all(|w| w[1] <= w[0] * 2 || w[0] < READ_CHUNK_MAX_BYTES));
    }

    #[test]
    fn a_declared_large_packet_gets_room_only_as_its_bytes_arrive() {
        let total = 900_000;
        let mut buf = large_packet_start(total, 10);
        grow_towards(&mut buf, READ_CHUNK_MAX_BYTES, total);
        assert!(
            buf.capacity() <= 2 * READ_CHUNK_MAX_BYTES,
            "{}",
            buf.capacity()
        );
        // Past the packet size limit it is not a packet to make room for.
        assert_eq!(large_packet_len(&buf, 100_000), None);
        // Small packets keep the usual read chunks.
        let small = BytesMut::from(&[0x30, 100, 0, 1, b't'][..]);
        assert_eq!(large_packet_len(&small, u32::MAX), None);
    }
}
