//! A plain TCP connection whose write side is shared: the connection's task reads and writes it
//! as any stream, and while the broker is quiet another connection's task may write deliveries
//! into it directly (see `Shared::write_directly`). A quiet read may peek first and take the
//! bytes out after their deliveries are written (see `connection::run`).

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The two halves of a TCP connection; the write half is reference-counted so the broker thread
/// can hold it too. The socket's write side shuts down when the last holder drops it.
pub(crate) struct SharedTcp {
    read: OwnedReadHalf,
    write: Rc<OwnedWriteHalf>,
}

impl SharedTcp {
    pub(crate) fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Self {
            read,
            write: Rc::new(write),
        }
    }

    /// The write half, for direct writes.
    pub(crate) fn writer(&self) -> Rc<OwnedWriteHalf> {
        Rc::clone(&self.write)
    }
}

/// Writes as much of `bytes` as the socket takes now; returns how much that was.
pub(crate) fn write_available(socket: &OwnedWriteHalf, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket.try_write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

/// Takes out of the socket the `n` bytes a peek looked at (and the caller already processed).
/// They are there, so the socket running dry before `n` is an error.
pub(crate) fn discard_peeked(socket: &TcpStream, n: usize) -> io::Result<()> {
    let mut sink = [0u8; 512];
    let mut left = n;
    while left > 0 {
        let chunk = left.min(sink.len());
        match socket.try_read(&mut sink[..chunk]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(taken) => left -= taken,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket: &TcpStream = (*self.write).as_ref();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits for the socket.
            match socket.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Rc::get_mut(&mut self.write) {
            Some(write) => Pin::new(write).poll_shutdown(cx),
            // Still held for direct writes: it shuts down when the last holder drops it.
            None => Poll::Ready(Ok(())),
        }
    }
}
