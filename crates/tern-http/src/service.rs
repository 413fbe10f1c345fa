//! The service each HTTP connection is served by. A long poll of a mailbox (`GET /v1/mbox`
//! without a body) is verified and handed to the broker thread right here, and then waits as
//! a small future: its reply channel and what its answer is signed with, a couple of hundred
//! bytes, where the router's chain of boxed futures (routing, the request counter, the
//! handler's state) would hold a few kilobytes for as long as the poll waits. Every other
//! request goes through the router.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{Method, Request, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::Body as _;
use hyper::body::Incoming;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::bridge::{Envelope, Op};
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::{prepare, refuse_unsigned, Next, Peer, Prepared, RequestLine, Shared, Signer};

/// The path of a mailbox poll (and its route, as the request counts name it).
const POLL_PATH: &str = "/v1/mbox";

/// Serves one connection's requests.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    pub(crate) router: Router,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    /// Whether the connection is TLS (the console's cookie and origin depend on it).
    pub(crate) transport: crate::console_session::Transport,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Serving;

    fn call(&self, mut request: Request<Incoming>) -> Serving {
        let poll = request.method() == Method::GET
            && request.uri().path() == POLL_PATH
            && request.body().is_end_stream();
        if poll {
            let (parts, _) = request.into_parts();
            return long_poll(&self.shared, parts, self.peer);
        }
        request.extensions_mut().insert(Peer(self.peer));
        request.extensions_mut().insert(self.transport);
        Serving::Routed(Box::pin(self.router.clone().oneshot(request)))
    }
}

/// A request on its way to its response.
pub(crate) enum Serving {
    /// Answered at once (counted already).
    Ready(Option<Response<Body>>),
    /// A poll waiting on the broker thread.
    Waiting(Waiting),
    /// A poll on the longer way (an access request, a full channel to the broker thread).
    Boxed(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
    /// Any other request: the router's.
    Routed(Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>),
}

/// A verified poll waiting for its answer from the broker thread.
pub(crate) struct Waiting {
    shared: Arc<Shared>,
    answer: oneshot::Receiver<Answer>,
    signer: Signer,
    peer: SocketAddr,
}

impl Future for Serving {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(response) => Poll::Ready(Ok(response.take().unwrap_or_default())),
            Self::Boxed(future) => future.as_mut().poll(cx).map(Ok),
            Self::Routed(future) => future.as_mut().poll(cx),
            Self::Waiting(waiting) => {
                let answer = ready!(Pin::new(&mut waiting.answer).poll(cx)).map_err(|_| gone());
                let response = waiting
                    .signer
                    .answer(&waiting.shared, &line(waiting.peer), answer);
                Poll::Ready(Ok(counted(&waiting.shared, response)))
            }
        }
    }
}

fn gone() -> ApiError {
    ApiError::unavailable("the broker is shutting down")
}

fn line(peer: SocketAddr) -> RequestLine {
    RequestLine {
        method: "GET".to_owned(),
        path: POLL_PATH.to_owned(),
        peer,
    }
}

/// Counts a poll's response, as the router's layer counts the others.
fn counted(shared: &Shared, response: Response<Body>) -> Response<Body> {
    shared
        .request_counts
        .count(POLL_PATH, "GET", response.status().as_u16());
    response
}

/// Verifies a poll and hands it to the broker thread.
fn long_poll(shared: &Arc<Shared>, parts: axum::http::request::Parts, peer: SocketAddr) -> Serving {
    let read = |_: &_, request: &crate::signing::RequestParts<'_>, _| {
        Ok(Op::Mailbox(crate::mailbox_routes::poll_op(request.query)?))
    };
    let prepared = match prepare(shared, parts, Bytes::new(), read) {
        Ok(prepared) => prepared,
        Err(error) => {
            let response = refuse_unsigned(shared, &line(peer), error);
            return Serving::Ready(Some(counted(shared, response)));
        }
    };
    let Prepared { signer, next } = prepared;
    let next = match next {
        Next::Bridge(request) => {
            let (reply, answer) = oneshot::channel();
            match shared.bridge.try_send(Envelope { request, reply }) {
                Ok(()) => {
                    return Serving::Waiting(Waiting {
                        shared: Arc::clone(shared),
                        answer,
                        signer,
                        peer,
                    })
                }
                Err(TrySendError::Full(envelope)) => Next::Bridge(envelope.request),
                Err(TrySendError::Closed(_)) => Next::Refused(gone()),
            }
        }
        other => other,
    };
    let shared = Arc::clone(shared);
    Serving::Boxed(Box::pin(async move {
        let response = Prepared { signer, next }.finish(&shared, &line(peer)).await;
        counted(&shared, response)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper keeps a connection's request future in one allocation for as long as the
    /// connection lives: for a waiting poll it is this, a few hundred bytes at most.
    #[test]
    fn a_waiting_poll_is_held_as_a_small_future() {
        let size = size_of::<Serving>();
        assert!(size <= 256, "{size} bytes");
    }
}
