//! The task that owns the transport and the session: it connects, reconnects after outages,
//! sends and resends, answers the broker, and routes incoming messages to subscribers. The
//! [`crate::Client`] handle talks to it over a channel.

use std::sync::Arc;
use std::time::Duration;

use tern_codec::{
    Ack, Connect, ConnectProperties, Disconnect, DisconnectProperties, MqttString, Packet,
    ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties, SubscriptionList,
    TopicFilter, Unsubscribe, Will,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{self, Link, Wire, WireError};
use crate::error::{ConnectError, PublishError};
use crate::options::ClientOptions;
use crate::session::{ControlDone, Enqueued, Outgoing, PendingControl, PublishDone, Session};
use crate::state::{ConnectionState, DownReason};
use crate::store::Store;
use crate::transport::Transport;

/// What the handle asks of the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        publish: Publish,
        done: Option<PublishDone>,
    },
    Subscribe {
        subscribe: Subscribe,
        route: Option<Route>,
        done: ControlDone,
    },
    Unsubscribe {
        unsubscribe: Unsubscribe,
        done: ControlDone,
    },
    Disconnect {
        properties: DisconnectProperties,
        done: oneshot::Sender<()>,
    },
}

/// Where messages matching some filters go.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) filters: Vec<TopicFilter>,
    pub(crate) sender: mpsc::Sender<Publish>,
}

impl Route {
    fn matches(&self, topic: &str) -> bool {
        self.filters.iter().any(|filter| match filter.shared() {
            Some((_, inner)) => inner.matches(topic),
            None => filter.matches(topic),
        })
    }
}

/// Marks the broker's own DISCONNECT among the reasons a link ends.
const BROKER_DISCONNECT: &str = "DISCONNECT from the broker";

enum Exit {
    Down(DownReason),
    Shutdown(Option<oneshot::Sender<()>>),
}

pub(crate) struct EventLoop {
    pub(crate) options: ClientOptions,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) session: Session,
    pub(crate) routes: Vec<Route>,
    /// Where messages no route takes go, when the application asked for them.
    pub(crate) inbox: Option<mpsc::Sender<Publish>>,
    pub(crate) store: Option<Store>,
    pub(crate) connected_once: bool,
}

impl EventLoop {
    pub(crate) async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            self.state.send_replace(ConnectionState::Connecting);
            let open = connection::open(
                self.transport.clone(),
                self.connect_packet(),
                self.options.maximum_packet_size,
                self.options.connect_timeout,
            );
            tokio::pin!(open);
            let opened = loop {
                tokio::select! {
                    opened = &mut open => break opened,
                    command = self.commands.recv() => {
                        if let Err(done) = self.offline_command(command) {
                            return self.shutdown(done);
                        }
                    }
                }
            };
            let reason = match opened {
                Ok(link) => {
                    failures = 0;
                    match self.online(link).await {
                        Exit::Shutdown(done) => return self.shutdown(done),
                        Exit::Down(reason) => reason,
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    match error {
                        ConnectError::Refused(code) => DownReason::Refused(code),
                        ConnectError::Timeout => DownReason::Timeout,
                        ConnectError::Transport(e) => DownReason::Transport(e.to_string()),
                        ConnectError::Protocol(e) => DownReason::Protocol(e),
                    }
                }
            };
            tracing::debug!(?reason, "link down");
            self.state.send_replace(ConnectionState::Down(reason));
            if !self.options.reconnect {
                return self.shutdown(None);
            }
            let delay = self.options.quiet_period + self.backoff(failures);
            if let Err(done) = self.wait(delay).await {
                return self.shutdown(done);
            }
        }
    }

    /// Jittered exponential backoff after `failures` failed attempts in a row ("equal jitter":
    /// half fixed, half random, so attempts spread out but never come too early).
    fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exponent = (failures - 1).min(16);
        let base = self
            .options
            .backoff_min
            .saturating_mul(1 << exponent)
            .min(self.options.backoff_max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Keeps the link down for `delay`, still accepting commands. `Err` on shutdown.
    async fn wait(&mut self, delay: Duration) -> Result<(), Option<oneshot::Sender<()>>> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                command = self.commands.recv() => self.offline_command(command)?,
            }
        }
    }

    fn shutdown(&mut self, done: Option<oneshot::Sender<()>>) {
        self.session.close();
        self.state.send_replace(ConnectionState::Closed);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn connect_packet(&self) -> Connect {
        let options = &self.options;
        let mut properties = ConnectProperties::default();
        if options.version == ProtocolVersion::V5 {
            if options.session_expiry_secs > 0 {
                properties.session_expiry_interval = Some(options.session_expiry_secs);
            }
            properties.receive_maximum =
                Some(options.receive_maximum.max(1)).filter(|&m| m != u16::MAX);
            properties.maximum_packet_size = Some(options.maximum_packet_size.max(1));
            if options.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(options.topic_alias_maximum);
            }
            properties.user_properties = options.connect_user_properties.clone();
            properties.request_response_information = options.request_response_information;
            properties.request_problem_information = options.request_problem_information;
        }
        let client_id = MqttString::new(&options.client_id).unwrap_or_default();
        let will = options.will.as_ref().and_then(|will| {
            Some(Will {
                topic: crate::topic_name(&will.topic).ok()?,
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties: will.properties.clone(),
            })
        });
        Connect {
            protocol_version: options.version,
            // Reconnections resume the session; an empty client id cannot have one.
            clean_start: (options.clean_start && !self.connected_once) || client_id.is_empty(),
            keep_alive: keep_alive_secs(options.keep_alive),
            properties,
            client_id,
            will,
            username: options
                .username
                .as_deref()
                .and_then(|u| MqttString::new(u).ok()),
            password: options.password.clone(),
        }
    }

    /// Handles a command while there is no link. `Err` means shut down.
    fn offline_command(
        &mut self,
        command: Option<Command>,
    ) -> Result<(), Option<oneshot::Sender<()>>> {
        match command {
            None => Err(None),
            Some(Command::Disconnect { done, .. }) => Err(Some(done)),
            Some(command) => {
                self.accept(command, None);
                Ok(())
            }
        }
    }

    /// Takes a publish, subscribe or unsubscribe into the session, writing it if online.
    fn accept(&mut self, command: Command, wire: Option<&mut Wire>) {
        match command {
            Command::Publish { publish, done } => self.accept_publish(publish, done, wire),
            Command::Subscribe {
                mut subscribe,
                route,
                done,
            } => {
                let Some(id) = self.session.allocate_id() else {
                    let _ = done.send(Err(crate::SubscribeError::Refused(
                        ReasonCode::PacketIdentifierInUse,
                    )));
                    return;
                };
                subscribe.packet_id = id;
                let sub_id = subscribe.properties.subscription_identifier;
                for subscription in subscribe.subscriptions.iter() {
                    self.session.subscriptions.insert(
                        subscription.filter.as_str().to_owned(),
                        (subscription.filter.clone(), subscription.options, sub_id),
                    );
                }
                if let Some(route) = route {
                    self.routes.push(route);
                }
                let packet = Packet::Subscribe(subscribe);
                if let Some(wire) = wire {
                    wire.write(&packet);
                }
                let pending = PendingControl {
                    packet,
                    done: Some(done),
                };
                self.session.control.insert(id.get(), pending);
            }
            Command::Unsubscribe {
                mut unsubscribe,
                done,
            } => {
                let Some(id) = self.session.allocate_id() else {
                    let _ = done.send(Err(crate::SubscribeError::Refused(
                        ReasonCode::PacketIdentifierInUse,
                    )));
                    return;
                };
                unsubscribe.packet_id = id;
                for filter in unsubscribe.filters.iter() {
                    self.session.subscriptions.remove(filter.as_str());
                    for route in &mut self.routes {
                        route.filters.retain(|f| f != &filter);
                    }
                }
                self.routes.retain(|route| !route.filters.is_empty());
                let packet = Packet::Unsubscribe(unsubscribe);
                if let Some(wire) = wire {
                    wire.write(&packet);
                }
                let pending = PendingControl {
                    packet,
                    done: Some(done),
                };
                self.session.control.insert(id.get(), pending);
            }
            Command::Disconnect { .. } => {}
        }
    }

    fn accept_publish(
        &mut self,
        publish: Publish,
        done: Option<PublishDone>,
        wire: Option<&mut Wire>,
    ) {
        if let Some(wire) = wire.as_deref() {
            if wire.too_large(&publish) {
                if let Some(done) = done {
                    let _ = done.send(Err(PublishError::TooLarge));
                }
                return;
            }
        }
        let outgoing = Outgoing {
            seq: self.session.next_seq(),
            publish,
            released: false,
            done,
        };
        if outgoing.publish.qos != QoS::AtMostOnce {
            if let Some(store) = &self.store {
                if let Err(error) = store.save(&outgoing) {
                    tracing::warn!(%error, "cannot persist a publish; keeping it in memory");
                }
            }
        }
        let limit = self.options.queue_count_max;
        match self
            .session
            .enqueue(outgoing, limit, self.options.queue_policy)
        {
            Enqueued::Queued => {}
            Enqueued::Displaced(old) => {
                self.forget(old.seq);
                old.finish(Err(PublishError::Dropped));
            }
            Enqueued::Refused(new) => {
                self.forget(new.seq);
                new.finish(Err(PublishError::QueueFull));
            }
        }
        if let Some(wire) = wire {
            self.pump(wire);
        }
    }

    fn forget(&self, seq: u64) {
        if let Some(store) = &self.store {
            if let Err(error) = store.remove(seq) {
                tracing::warn!(%error, "cannot remove a completed publish from the store");
            }
        }
    }

    fn persist(&self, outgoing: &Outgoing) {
        if let Some(store) = &self.store {
            if let Err(error) = store.save(outgoing) {
                tracing::warn!(%error, "cannot persist a publish's state");
            }
        }
    }

    /// Sends queued publishes while the broker's Receive Maximum allows.
    fn pump(&mut self, wire: &mut Wire) {
        while let Some(mut outgoing) = self.session.next_to_send(wire.window) {
            if outgoing.publish.qos > wire.max_qos {
                // The broker's Maximum QoS (3.2.2.3.4): send at the highest it accepts.
                outgoing.publish.qos = wire.max_qos;
                if wire.max_qos == QoS::AtMostOnce {
                    outgoing.publish.packet_id = None;
                }
            }
            if outgoing.publish.qos == QoS::AtMostOnce {
                let written = wire.write_publish(&outgoing.publish, false);
                self.forget(outgoing.seq);
                outgoing.finish(if written {
                    Ok(ReasonCode::Success)
                } else {
                    Err(PublishError::TooLarge)
                });
                continue;
            }
            self.persist(&outgoing);
            if wire.write_publish(&outgoing.publish, false) {
                self.session.track(outgoing);
            } else {
                self.forget(outgoing.seq);
                outgoing.finish(Err(PublishError::TooLarge));
            }
        }
    }

    /// Restores the session on a new link: resubscribes if the broker kept nothing, resends
    /// unacknowledged SUBSCRIBE/UNSUBSCRIBE, then in-flight publishes (DUP) or PUBREL in order.
    fn restore(&mut self, wire: &mut Wire, session_present: bool) {
        for pending in self.session.control.values() {
            wire.write(&pending.packet);
        }
        if !session_present {
            self.session.forget_incoming();
            let subscriptions: Vec<_> = self.session.subscriptions.values().cloned().collect();
            for (filter, options, sub_id) in subscriptions {
                let Some(id) = self.session.allocate_id() else {
                    break;
                };
                let subscription = tern_codec::Subscription { filter, options };
                let properties = SubscribeProperties {
                    subscription_identifier: sub_id,
                    ..SubscribeProperties::default()
                };
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: id,
                    properties,
                    subscriptions: SubscriptionList::new([&subscription]),
                });
                wire.write(&packet);
                self.session
                    .control
                    .insert(id.get(), PendingControl { packet, done: None });
            }
        }
        for outgoing in self.session.inflight.values() {
            match (outgoing.released, outgoing.publish.packet_id) {
                (true, Some(id)) => wire.write(&Packet::PubRel(Ack::new(id))),
                _ => {
                    wire.write_publish(&outgoing.publish, true);
                }
            }
        }
        self.pump(wire);
    }

    async fn online(&mut self, link: Link) -> Exit {
        let Link {
            mut stream,
            mut read_buf,
            mut decoder,
            connack,
        } = link;
        let version = self.options.version;
        let mut wire = Wire::new(
            version,
            &connack,
            self.options.keep_alive,
            self.options.ping_timeout(),
            self.options.outgoing_topic_aliases,
            self.options.topic_alias_maximum,
        );
        self.connected_once = true;
        let session_present = connack.session_present;
        self.state
            .send_replace(ConnectionState::Connected { session_present });
        self.restore(&mut wire, session_present);
        loop {
            // Decode everything already buffered, then flush what it produced.
            loop {
                match decoder.decode(&mut read_buf) {
                    Ok(Some(packet)) => {
                        wire.note_received();
                        if let Err(error) = self.handle_packet(packet, &mut wire).await {
                            return self.protocol_down(&mut stream, &mut wire, error).await;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let reason = (error.reason_code(), "undecodable packet");
                        return self.protocol_down(&mut stream, &mut wire, reason).await;
                    }
                }
            }
            if !wire.write_buf.is_empty() {
                // TLS and WebSocket streams buffer until flushed; TCP's flush is free.
                let write = async {
                    stream.write_all(&wire.write_buf).await?;
                    stream.flush().await
                };
                match tokio::time::timeout(wire.write_timeout(), write).await {
                    Ok(Ok(())) => {
                        wire.write_buf.clear();
                        wire.note_sent();
                    }
                    Ok(Err(e)) => return Exit::Down(DownReason::Transport(e.to_string())),
                    Err(_) => return Exit::Down(DownReason::KeepAlive),
                }
            }
            let deadline = wire.deadline();
            tokio::select! {
                read = stream.read_buf(&mut read_buf) => match read {
                    Ok(0) => return Exit::Down(DownReason::Transport("closed by the broker".into())),
                    Ok(_) => {}
                    Err(e) => return Exit::Down(DownReason::Transport(e.to_string())),
                },
                command = self.commands.recv() => match command {
                    None => {
                        let properties = DisconnectProperties::default();
                        return self.goodbye(&mut stream, &mut wire, properties, None).await;
                    }
                    Some(Command::Disconnect { properties, done }) => {
                        return self.goodbye(&mut stream, &mut wire, properties, Some(done)).await
                    }
                    Some(command) => self.accept(command, Some(&mut wire)),
                },
                () = sleep_until(deadline) => {
                    if wire.on_deadline().is_err() {
                        return Exit::Down(DownReason::KeepAlive);
                    }
                }
            }
        }
    }

    /// Ends the session's link cleanly: DISCONNECT, then close.
    async fn goodbye(
        &mut self,
        stream: &mut crate::transport::BoxStream,
        wire: &mut Wire,
        properties: DisconnectProperties,
        done: Option<oneshot::Sender<()>>,
    ) -> Exit {
        let mut disconnect = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
        disconnect.properties = properties;
        wire.write(&Packet::Disconnect(disconnect));
        let flush = async {
            stream.write_all(&wire.write_buf).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
        Exit::Shutdown(done)
    }

    /// The broker broke the protocol: tell it why (MQTT 5) and drop the link.
    async fn protocol_down(
        &mut self,
        stream: &mut crate::transport::BoxStream,
        wire: &mut Wire,
        (code, why): WireError,
    ) -> Exit {
        if why == BROKER_DISCONNECT {
            return Exit::Down(DownReason::Disconnected(code));
        }
        tracing::debug!(?code, why, "protocol error from the broker");
        wire.write_buf.clear();
        wire.write(&Packet::Disconnect(Disconnect::new(code)));
        let write = async {
            stream.write_all(&wire.write_buf).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), write).await;
        Exit::Down(DownReason::Protocol(why.to_owned()))
    }

    async fn handle_packet(&mut self, packet: Packet, wire: &mut Wire) -> Result<(), WireError> {
        match packet {
            Packet::Publish(mut publish) => {
                wire.resolve_alias(&mut publish)?;
                match (publish.qos, publish.packet_id) {
                    (QoS::AtMostOnce, _) => self.deliver(publish).await,
                    (QoS::AtLeastOnce, Some(id)) => {
                        self.deliver(publish).await;
                        wire.write(&Packet::PubAck(Ack::new(id)));
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        // Delivered once, on first receipt; a resend before PUBREL is only
                        // acknowledged again (MQTT-4.3.3-9).
                        // A broker exceeding our Receive Maximum is tolerated rather than
                        // disconnected: the state it costs is bounded by the identifier space,
                        // and cutting the link would only make it resend more.
                        if self.session.accept_incoming_qos2(&publish, id) {
                            self.deliver(publish).await;
                        }
                        wire.write(&Packet::PubRec(Ack::new(id)));
                    }
                    _ => {
                        return Err((
                            ReasonCode::ProtocolError,
                            "QoS 1/2 PUBLISH without identifier",
                        ))
                    }
                }
            }
            Packet::PubAck(ack) => {
                if let Some(outgoing) = self.session.complete(ack.packet_id) {
                    self.forget(outgoing.seq);
                    outgoing.finish(ack_outcome(ack.reason_code));
                    self.pump(wire);
                }
            }
            Packet::PubRec(ack) => {
                let mut refused = false;
                if let Some(outgoing) = self.session.inflight_mut(ack.packet_id) {
                    if ack.reason_code.is_success() {
                        outgoing.released = true;
                    } else {
                        refused = true;
                    }
                }
                if refused {
                    // A refused QoS 2 publish ends at PUBREC (MQTT-4.3.3-4 does not apply).
                    if let Some(outgoing) = self.session.complete(ack.packet_id) {
                        self.forget(outgoing.seq);
                        outgoing.finish(ack_outcome(ack.reason_code));
                        self.pump(wire);
                    }
                    return Ok(());
                }
                if let Some(seq) = self.session.inflight_mut(ack.packet_id).map(|o| o.seq) {
                    if let Some(outgoing) = self.session.inflight.get(&seq) {
                        self.persist(outgoing);
                    }
                    wire.write(&Packet::PubRel(Ack::new(ack.packet_id)));
                } else {
                    let mut rel = Ack::new(ack.packet_id);
                    rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                    wire.write(&Packet::PubRel(rel));
                }
            }
            Packet::PubRel(ack) => {
                let mut comp = Ack::new(ack.packet_id);
                if !self.session.release_incoming_qos2(ack.packet_id) {
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                wire.write(&Packet::PubComp(comp));
            }
            Packet::PubComp(ack) => {
                if let Some(outgoing) = self.session.complete(ack.packet_id) {
                    self.forget(outgoing.seq);
                    // 0x92 after a resent PUBREL: the broker finished it before the outage.
                    outgoing.finish(Ok(outgoing_reason(&ack.reason_code)));
                    self.pump(wire);
                }
            }
            Packet::SubAck(suback) => {
                self.control_done(suback.packet_id.get(), suback.reason_codes);
            }
            Packet::UnsubAck(unsuback) => {
                let codes = if wire.version == ProtocolVersion::V311 {
                    vec![ReasonCode::Success]
                } else {
                    unsuback.reason_codes
                };
                self.control_done(unsuback.packet_id.get(), codes);
            }
            Packet::PingResp => {}
            Packet::Disconnect(disconnect) => {
                return Err((disconnect.reason_code, BROKER_DISCONNECT));
            }
            Packet::Auth(_) => {
                return Err((
                    ReasonCode::ProtocolError,
                    "AUTH is not supported by this client",
                ));
            }
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => {
                return Err((ReasonCode::ProtocolError, "packet a broker must not send"));
            }
        }
        Ok(())
    }

    fn control_done(&mut self, id: u16, codes: Vec<ReasonCode>) {
        let Some(pending) = self.session.control.remove(&id) else {
            return;
        };
        let Some(done) = pending.done else {
            return;
        };
        let outcome = if !codes.is_empty() && codes.iter().all(|c| !c.is_success()) {
            Err(crate::SubscribeError::Refused(codes[0]))
        } else {
            Ok(codes)
        };
        let _ = done.send(outcome);
    }

    /// Hands a message to every route whose filters match, or to the inbox when none takes
    /// it; a full route stalls the link (back-pressure to the broker), a closed one is removed.
    async fn deliver(&mut self, publish: Publish) {
        let topic = publish.topic.as_str().to_owned();
        let mut closed = false;
        let mut taken = false;
        for route in self.routes.iter().filter(|r| r.matches(&topic)) {
            if route.sender.send(publish.clone()).await.is_err() {
                closed = true;
            } else {
                taken = true;
            }
        }
        if closed {
            self.routes.retain(|route| !route.sender.is_closed());
        }
        if !taken {
            if let Some(inbox) = &self.inbox {
                if inbox.send(publish).await.is_err() {
                    self.inbox = None;
                }
            }
        }
    }
}

fn ack_outcome(code: ReasonCode) -> Result<ReasonCode, PublishError> {
    if code.is_success() {
        Ok(code)
    } else {
        Err(PublishError::Refused(code))
    }
}

fn outgoing_reason(code: &ReasonCode) -> ReasonCode {
    match code {
        ReasonCode::PacketIdentifierNotFound => ReasonCode::Success,
        other => *other,
    }
}

fn keep_alive_secs(keep_alive: Duration) -> u16 {
    if keep_alive.is_zero() {
        return 0;
    }
    // The broker is told whole seconds, rounded up; the client may ping more often.
    let secs = keep_alive.as_millis().div_ceil(1000);
    u16::try_from(secs).unwrap_or(u16::MAX)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
