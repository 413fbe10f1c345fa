//! The application's handle: cheap to clone, it sends commands to the event loop and awaits
//! their outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tern_codec::{
    DisconnectProperties, FilterList, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties,
    Subscription, SubscriptionList, SubscriptionOptions, Unsubscribe, UnsubscribeProperties,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{ConnectError, PublishError, StoreError, SubscribeError};
use crate::event_loop::{Command, EventLoop, Route};
use crate::options::ClientOptions;
use crate::session::Session;
use crate::state::{ConnectionState, DownReason};
use crate::store::Store;
use crate::transport::Transport;

/// Commands waiting for the event loop; a full channel makes callers wait.
const COMMAND_QUEUE_COUNT_MAX: usize = 1024;

/// A handle to a running client. Clone it freely; the event loop ends when every handle is
/// dropped or [`Client::disconnect`] is called.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
    options: Arc<ClientOptions>,
    pub(crate) replies: Arc<crate::request::Replies>,
}

impl Client {
    /// Starts the event loop on the current tokio runtime and returns the handle and the
    /// task. Messages persisted by an earlier run (see `ClientOptions::store_dir`) are
    /// restored and sent once connected.
    pub fn start(
        options: ClientOptions,
        transport: impl Transport,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        Self::launch(options, transport, None)
    }

    /// Like [`Client::start`], and also returns an inbox that receives every incoming message
    /// no subscription's [`Messages`] takes: those a resumed session delivers before the
    /// application subscribes again, those for filters it no longer routes, and all of them
    /// once the `Messages` of a subscription are dropped. A command-line subscriber reads
    /// only the inbox and so prints whatever the broker sends, in order.
    pub fn start_with_inbox(
        options: ClientOptions,
        transport: impl Transport,
    ) -> Result<(Self, Messages, JoinHandle<()>), StoreError> {
        let (sender, receiver) = mpsc::channel(options.subscription_buffer_count.max(1));
        let (client, task) = Self::launch(options, transport, Some(sender))?;
        let inbox = Messages {
            receiver,
            reason_codes: Vec::new(),
        };
        Ok((client, inbox, task))
    }

    fn launch(
        options: ClientOptions,
        transport: impl Transport,
        inbox: Option<mpsc::Sender<Publish>>,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let mut session = Session::default();
        let store = match &options.store_dir {
            Some(dir) => {
                let store = Store::open(dir, options.store_sync)?;
                for outgoing in store.load()? {
                    session.restore(outgoing);
                }
                Some(store)
            }
            None => None,
        };
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_COUNT_MAX);
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let event_loop = EventLoop {
            options: options.clone(),
            transport: Arc::new(transport),
            commands,
            state: state_tx,
            session,
            routes: Vec::new(),
            inbox,
            store,
            connected_once: false,
        };
        let task = tokio::spawn(event_loop.run());
        let client = Self {
            commands: commands_tx,
            state,
            options: Arc::new(options),
            replies: Arc::default(),
        };
        Ok((client, task))
    }

    /// The options the client was started with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// A receiver of connection state changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits until connected; fails at once if the broker refuses the connection, or when
    /// `timeout` passes. Returns the CONNACK's Session Present flag.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<bool, ConnectError> {
        let mut state = self.state.clone();
        let wait = async {
            loop {
                match &*state.borrow_and_update() {
                    ConnectionState::Connected { session_present } => return Ok(*session_present),
                    ConnectionState::Down(DownReason::Refused(code)) => {
                        return Err(ConnectError::Refused(*code))
                    }
                    ConnectionState::Closed => {
                        return Err(ConnectError::Transport(
                            std::io::ErrorKind::NotConnected.into(),
                        ))
                    }
                    _ => {}
                }
                if state.changed().await.is_err() {
                    return Err(ConnectError::Transport(
                        std::io::ErrorKind::NotConnected.into(),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// Publishes and waits for completion: QoS 0 when written, QoS 1 at PUBACK, QoS 2 at
    /// PUBCOMP. Returns the acknowledgement's reason code (e.g. 0x10 No matching subscribers).
    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<ReasonCode, PublishError> {
        let mut publish = crate::message(topic, payload)?;
        publish.qos = qos;
        publish.retain = retain;
        self.send(publish).await?.await
    }

    /// Hands a message (with any properties) to the client and returns at once with a future
    /// of its acknowledgement; messages are sent in the order they are handed over.
    pub async fn send(&self, publish: Publish) -> Result<Pending, PublishError> {
        let (done, outcome) = oneshot::channel();
        let command = Command::Publish {
            publish,
            done: Some(done),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| PublishError::Closed)?;
        Ok(Pending { outcome })
    }

    /// Subscribes to one filter; the returned [`Messages`] yields every message matching it.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<Messages, SubscribeError> {
        self.subscribe_with(
            &[(filter, SubscriptionOptions::qos(qos))],
            SubscribeProperties::default(),
        )
        .await
    }

    /// Subscribes to several filters with full options and properties, in one SUBSCRIBE.
    /// The subscription is restored after reconnections when the broker has no session.
    pub async fn subscribe_with(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        properties: SubscribeProperties,
    ) -> Result<Messages, SubscribeError> {
        let (sender, receiver) = mpsc::channel(self.options.subscription_buffer_count.max(1));
        let reason_codes = self
            .send_subscribe(filters, properties, Some(sender))
            .await?;
        Ok(Messages {
            receiver,
            reason_codes,
        })
    }

    /// Subscribes without a receiver of its own: the messages go to the inbox of a client
    /// started with [`Client::start_with_inbox`], in the order the broker sends them. Returns
    /// the SUBACK reason codes.
    pub async fn subscribe_to_inbox(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        properties: SubscribeProperties,
    ) -> Result<Vec<ReasonCode>, SubscribeError> {
        self.send_subscribe(filters, properties, None).await
    }

    async fn send_subscribe(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        properties: SubscribeProperties,
        sender: Option<mpsc::Sender<Publish>>,
    ) -> Result<Vec<ReasonCode>, SubscribeError> {
        let mut subscriptions = Vec::with_capacity(filters.len());
        for (filter, options) in filters {
            subscriptions.push(Subscription {
                filter: crate::topic_filter(filter)?,
                options: *options,
            });
        }
        let route = sender.map(|sender| Route {
            filters: subscriptions.iter().map(|s| s.filter.clone()).collect(),
            sender,
        });
        let subscribe = Subscribe {
            // Assigned by the event loop.
            packet_id: tern_codec::PacketId::new(1).ok_or(SubscribeError::Closed)?,
            properties,
            subscriptions: SubscriptionList::new(&subscriptions),
        };
        let (done, outcome) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                subscribe,
                route,
                done,
            })
            .await
            .map_err(|_| SubscribeError::Closed)?;
        outcome.await.map_err(|_| SubscribeError::Closed)?
    }

    /// Unsubscribes from filters; messages for them stop reaching their [`Messages`].
    pub async fn unsubscribe(&self, filters: &[&str]) -> Result<Vec<ReasonCode>, SubscribeError> {
        self.unsubscribe_with(filters, UnsubscribeProperties::default())
            .await
    }

    /// Unsubscribes from filters, with MQTT 5 properties (user properties).
    pub async fn unsubscribe_with(
        &self,
        filters: &[&str],
        properties: UnsubscribeProperties,
    ) -> Result<Vec<ReasonCode>, SubscribeError> {
        let mut parsed = Vec::with_capacity(filters.len());
        for filter in filters {
            parsed.push(crate::topic_filter(filter)?);
        }
        let unsubscribe = Unsubscribe {
            packet_id: tern_codec::PacketId::new(1).ok_or(SubscribeError::Closed)?,
            properties,
            filters: FilterList::new(&parsed),
        };
        let (done, outcome) = oneshot::channel();
        self.commands
            .send(Command::Unsubscribe { unsubscribe, done })
            .await
            .map_err(|_| SubscribeError::Closed)?;
        outcome.await.map_err(|_| SubscribeError::Closed)?
    }

    /// Sends DISCONNECT (no will is published) and stops the event loop. Publishes still
    /// queued or in flight fail with `PublishError::Closed`; persisted ones stay on disk.
    pub async fn disconnect(&self) {
        self.disconnect_with(DisconnectProperties::default()).await;
    }

    /// Like [`Client::disconnect`], with MQTT 5 DISCONNECT properties (a new session expiry
    /// interval, user properties).
    pub async fn disconnect_with(&self, properties: DisconnectProperties) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(Command::Disconnect { properties, done })
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }
}

/// The acknowledgement of a publish handed to [`Client::send`].
#[derive(Debug)]
pub struct Pending {
    outcome: oneshot::Receiver<Result<ReasonCode, PublishError>>,
}

impl Future for Pending {
    type Output = Result<ReasonCode, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(PublishError::Closed)))
    }
}

/// Messages matching a subscription, in the order the broker sent them.
#[derive(Debug)]
pub struct Messages {
    receiver: mpsc::Receiver<Publish>,
    reason_codes: Vec<ReasonCode>,
}

impl Messages {
    /// The next message; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<Publish> {
        self.receiver.recv().await
    }

    /// The SUBACK reason codes (granted QoS or refusal), one per filter.
    pub fn reason_codes(&self) -> &[ReasonCode] {
        &self.reason_codes
    }
}
