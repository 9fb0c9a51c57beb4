//! One client connection: reads frames, turns each command into a [`BrokerState`] call under
//! the broker's lock, and writes answers and dispatched MESSAGEs in order through one queue.
//! Keepalive: the broker sends PING every `ping_interval` and closes a connection silent for
//! two intervals; it answers the client's PINGs with PONG.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::pulsar::message::proto::{
    self, base_command::Type, command_ack::AckType, command_lookup_topic_response,
    command_partitioned_topic_metadata_response, command_subscribe::InitialPosition, command_subscribe::SubType,
    BaseCommand, MessageIdData, ServerError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::frame::{self, base, encode_command, encode_payload_command, Frame, MAX_MESSAGE_SIZE};
use super::state::{normalize_topic, BrokerState, ConnId, ConsumerKey, Delivery};

/// Highest protocol version this broker speaks (`ProtocolVersion::V19` in PulsarApi.proto).
pub const PROTOCOL_VERSION: i32 = 19;
pub const SERVER_VERSION: &str = "twinrt-test-broker (Pulsar protocol subset)";

/// What goes out on a connection, in order.
#[derive(Debug)]
pub enum Out {
    Frame(Vec<u8>),
    /// Flush what came before, then close.
    Close,
}

pub struct ConnEntry {
    pub tx: mpsc::UnboundedSender<Out>,
    pub abort: Option<tokio::task::AbortHandle>,
}

/// Everything behind the broker's lock: the state and the open connections' queues.
#[derive(Default)]
pub struct Inner {
    pub state: BrokerState,
    pub conns: std::collections::HashMap<ConnId, ConnEntry>,
    /// Every ERROR / SEND_ERROR the broker answered, and why it closed connections.
    pub events: Vec<String>,
    /// Every MESSAGE dispatched, in order.
    pub deliveries: Vec<Delivery>,
}

impl Inner {
    /// Runs the dispatcher of `topic` and queues the MESSAGE frames.
    pub fn dispatch(&mut self, topic: &str) {
        for d in self.state.dispatch(topic) {
            let Some(entry) = self.state.entry(&d.topic, d.entry_id) else { continue };
            let mut cmd = base(Type::Message);
            cmd.message = Some(proto::CommandMessage {
                consumer_id: d.consumer.consumer_id,
                message_id: message_id(d.ledger_id, d.entry_id),
                redelivery_count: Some(d.redelivery_count),
                ack_set: Vec::new(),
                consumer_epoch: None,
            });
            let bytes = encode_payload_command(&cmd, &entry.metadata, &entry.data);
            if let Some(c) = self.conns.get(&d.consumer.conn) {
                let _ = c.tx.send(Out::Frame(bytes));
            }
            self.deliveries.push(d);
        }
    }

    /// Forgets a connection: its producers and consumers go (their unacked messages are
    /// redelivered to the subscriptions' other consumers).
    pub fn close_connection(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        for topic in self.state.close_connection(conn) {
            self.dispatch(&topic);
        }
    }
}

pub fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn message_id(ledger_id: u64, entry_id: u64) -> MessageIdData {
    MessageIdData { ledger_id, entry_id, ..Default::default() }
}

/// The request id of a command that has one (for an ERROR answer), 0 otherwise.
fn request_id(c: &BaseCommand) -> u64 {
    let ids = [
        c.subscribe.as_ref().map(|x| x.request_id),
        c.producer.as_ref().map(|x| x.request_id),
        c.unsubscribe.as_ref().map(|x| x.request_id),
        c.close_producer.as_ref().map(|x| x.request_id),
        c.close_consumer.as_ref().map(|x| x.request_id),
        c.partition_metadata.as_ref().map(|x| x.request_id),
        c.lookup_topic.as_ref().map(|x| x.request_id),
        c.consumer_stats.as_ref().map(|x| x.request_id),
        c.seek.as_ref().map(|x| x.request_id),
        c.get_last_message_id.as_ref().map(|x| x.request_id),
        c.get_topics_of_namespace.as_ref().map(|x| x.request_id),
        c.get_schema.as_ref().map(|x| x.request_id),
        c.get_or_create_schema.as_ref().map(|x| x.request_id),
        c.new_txn.as_ref().map(|x| x.request_id),
        c.add_partition_to_txn.as_ref().map(|x| x.request_id),
        c.add_subscription_to_txn.as_ref().map(|x| x.request_id),
        c.end_txn.as_ref().map(|x| x.request_id),
        c.end_txn_on_partition.as_ref().map(|x| x.request_id),
        c.end_txn_on_subscription.as_ref().map(|x| x.request_id),
        c.tc_client_connect_request.as_ref().map(|x| x.request_id),
    ];
    ids.into_iter().flatten().next().unwrap_or(0)
}

pub fn error_frame(request_id: u64, error: ServerError, message: &str) -> Vec<u8> {
    let mut cmd = base(Type::Error);
    cmd.error = Some(proto::CommandError { request_id, error: error as i32, message: message.to_string() });
    encode_command(&cmd)
}

fn success_frame(request_id: u64) -> Vec<u8> {
    let mut cmd = base(Type::Success);
    cmd.success = Some(proto::CommandSuccess { request_id, schema: None });
    encode_command(&cmd)
}

pub fn ping_frame() -> Vec<u8> {
    let mut cmd = base(Type::Ping);
    cmd.ping = Some(proto::CommandPing {});
    encode_command(&cmd)
}

/// The command handler of one connection (synchronous; its answers go to `tx`).
pub struct Handler {
    pub conn: ConnId,
    pub inner: Arc<Mutex<Inner>>,
    pub tx: mpsc::UnboundedSender<Out>,
    pub url: String,
    pub connected: bool,
}

/// Whether the connection goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

impl Handler {
    fn send(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(Out::Frame(bytes));
    }

    fn refuse(&self, inner: &mut Inner, request_id: u64, error: ServerError, message: &str) {
        inner.events.push(format!("conn {}: ERROR {error:?}: {message}", self.conn));
        self.send(error_frame(request_id, error, message));
    }

    pub fn handle(&mut self, f: Frame) -> Flow {
        let inner_arc = self.inner.clone();
        let mut guard = lock(&inner_arc);
        let inner = &mut *guard;
        let c = f.command;
        let Ok(t) = Type::try_from(c.r#type) else {
            let msg = format!("unsupported command {} (not a Pulsar command type)", frame::type_name(c.r#type));
            self.refuse(inner, request_id(&c), ServerError::NotAllowedError, &msg);
            return Flow::Continue;
        };
        if !self.connected && t != Type::Connect {
            let msg = format!("{} received before CONNECT", t.as_str_name());
            self.refuse(inner, request_id(&c), ServerError::NotAllowedError, &msg);
            let _ = self.tx.send(Out::Close);
            return Flow::Close;
        }
        let missing = |inner: &mut Inner, h: &Handler| {
            let msg = format!("{} command without its {} field", t.as_str_name(), t.as_str_name().to_lowercase());
            h.refuse(inner, request_id(&c), ServerError::UnknownError, &msg);
            Flow::Continue
        };
        match t {
            Type::Connect => {
                let Some(connect) = &c.connect else { return missing(inner, self) };
                let version = connect.protocol_version.unwrap_or(0).min(PROTOCOL_VERSION);
                let mut cmd = base(Type::Connected);
                cmd.connected = Some(proto::CommandConnected {
                    server_version: SERVER_VERSION.into(),
                    protocol_version: Some(version),
                    max_message_size: Some(MAX_MESSAGE_SIZE as i32),
                });
                self.connected = true;
                self.send(encode_command(&cmd));
            }
            Type::Ping => {
                let mut cmd = base(Type::Pong);
                cmd.pong = Some(proto::CommandPong {});
                self.send(encode_command(&cmd));
            }
            Type::Pong => {}
            Type::Lookup => {
                let Some(l) = &c.lookup_topic else { return missing(inner, self) };
                let mut r = proto::CommandLookupTopicResponse { request_id: l.request_id, ..Default::default() };
                match normalize_topic(&l.topic) {
                    Ok(_) => {
                        r.response = Some(command_lookup_topic_response::LookupType::Connect as i32);
                        r.broker_service_url = Some(self.url.clone());
                        r.authoritative = Some(true);
                        r.proxy_through_service_url = Some(false);
                    }
                    Err(e) => {
                        inner.events.push(format!("conn {}: LOOKUP failed: {e}", self.conn));
                        r.response = Some(command_lookup_topic_response::LookupType::Failed as i32);
                        r.error = Some(ServerError::InvalidTopicName as i32);
                        r.message = Some(e);
                    }
                }
                let mut cmd = base(Type::LookupResponse);
                cmd.lookup_topic_response = Some(r);
                self.send(encode_command(&cmd));
            }
            Type::PartitionedMetadata => {
                let Some(p) = &c.partition_metadata else { return missing(inner, self) };
                let mut r =
                    proto::CommandPartitionedTopicMetadataResponse { request_id: p.request_id, ..Default::default() };
                match normalize_topic(&p.topic) {
                    Ok(_) => {
                        r.partitions = Some(0);
                        r.response = Some(command_partitioned_topic_metadata_response::LookupType::Success as i32);
                    }
                    Err(e) => {
                        r.response = Some(command_partitioned_topic_metadata_response::LookupType::Failed as i32);
                        r.error = Some(ServerError::InvalidTopicName as i32);
                        r.message = Some(e);
                    }
                }
                let mut cmd = base(Type::PartitionedMetadataResponse);
                cmd.partition_metadata_response = Some(r);
                self.send(encode_command(&cmd));
            }
            Type::Producer => {
                let Some(p) = &c.producer else { return missing(inner, self) };
                let topic = match normalize_topic(&p.topic) {
                    Ok(t) => t,
                    Err(e) => {
                        self.refuse(inner, p.request_id, ServerError::InvalidTopicName, &e);
                        return Flow::Continue;
                    }
                };
                match inner.state.add_producer(self.conn, p.producer_id, &topic, p.producer_name.as_deref()) {
                    Ok(name) => {
                        let mut cmd = base(Type::ProducerSuccess);
                        cmd.producer_success = Some(proto::CommandProducerSuccess {
                            request_id: p.request_id,
                            producer_name: name,
                            last_sequence_id: Some(-1),
                            schema_version: None,
                            topic_epoch: None,
                            producer_ready: Some(true),
                        });
                        self.send(encode_command(&cmd));
                    }
                    Err((code, msg)) => self.refuse(inner, p.request_id, code, &msg),
                }
            }
            Type::Send => {
                let Some(s) = &c.send else { return missing(inner, self) };
                let send_error = |inner: &mut Inner, h: &Handler, error: ServerError, message: String| {
                    inner.events.push(format!("conn {}: SEND_ERROR {error:?}: {message}", h.conn));
                    let mut cmd = base(Type::SendError);
                    cmd.send_error = Some(proto::CommandSendError {
                        producer_id: s.producer_id,
                        sequence_id: s.sequence_id,
                        error: error as i32,
                        message,
                    });
                    h.send(encode_command(&cmd));
                };
                let Some(topic) = inner.state.producer(self.conn, s.producer_id).map(|p| p.topic.clone()) else {
                    let msg = format!("producer {} is not connected", s.producer_id);
                    send_error(inner, self, ServerError::UnknownError, msg);
                    return Flow::Continue;
                };
                let Some(payload) = &f.payload else {
                    send_error(inner, self, ServerError::UnknownError, "SEND without a payload".into());
                    return Flow::Continue;
                };
                if !payload.checksum_ok() {
                    // As Pulsar: the send fails, the connection stays.
                    send_error(inner, self, ServerError::ChecksumError, "Checksum failed on the broker".into());
                    return Flow::Continue;
                }
                match inner.state.append(&topic, &payload.metadata, &payload.data) {
                    Ok((ledger, entry)) => {
                        let mut cmd = base(Type::SendReceipt);
                        cmd.send_receipt = Some(proto::CommandSendReceipt {
                            producer_id: s.producer_id,
                            sequence_id: s.sequence_id,
                            message_id: Some(message_id(ledger, entry)),
                            highest_sequence_id: s.highest_sequence_id,
                        });
                        self.send(encode_command(&cmd));
                        inner.dispatch(&topic);
                    }
                    Err(e) => send_error(inner, self, ServerError::UnknownError, e),
                }
            }
            Type::Subscribe => {
                let Some(s) = &c.subscribe else { return missing(inner, self) };
                let topic = match normalize_topic(&s.topic) {
                    Ok(t) => t,
                    Err(e) => {
                        self.refuse(inner, s.request_id, ServerError::InvalidTopicName, &e);
                        return Flow::Continue;
                    }
                };
                let Ok(sub_type) = SubType::try_from(s.sub_type) else {
                    let msg = format!("unknown subscription type {}", s.sub_type);
                    self.refuse(inner, s.request_id, ServerError::NotAllowedError, &msg);
                    return Flow::Continue;
                };
                let initial = s
                    .initial_position
                    .and_then(|p| InitialPosition::try_from(p).ok())
                    .unwrap_or(InitialPosition::Latest);
                let key = ConsumerKey { conn: self.conn, consumer_id: s.consumer_id };
                let name =
                    s.consumer_name.clone().unwrap_or_else(|| format!("consumer-{}-{}", self.conn, s.consumer_id));
                let res = inner.state.subscribe(
                    key,
                    &topic,
                    &s.subscription,
                    sub_type,
                    &name,
                    s.priority_level.unwrap_or(0),
                    initial,
                    s.key_shared_meta.as_ref(),
                );
                match res {
                    Ok(()) => {
                        self.send(success_frame(s.request_id));
                        inner.dispatch(&topic);
                    }
                    Err((code, msg)) => self.refuse(inner, s.request_id, code, &msg),
                }
            }
            Type::Flow => {
                let Some(fl) = &c.flow else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: fl.consumer_id };
                if let Some(topic) = inner.state.flow(key, fl.message_permits) {
                    inner.dispatch(&topic);
                }
            }
            Type::Ack => {
                let Some(a) = &c.ack else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: a.consumer_id };
                let ack_type = AckType::try_from(a.ack_type).unwrap_or(AckType::Individual);
                let res = inner.state.ack(key, ack_type, &a.message_id);
                if let Err((code, msg)) = &res {
                    inner.events.push(format!("conn {}: ACK refused ({code:?}): {msg}", self.conn));
                }
                if let Some(request_id) = a.request_id {
                    let mut cmd = base(Type::AckResponse);
                    let (error, message) = match &res {
                        Ok(_) => (None, None),
                        Err((code, msg)) => (Some(*code as i32), Some(msg.clone())),
                    };
                    cmd.ack_response = Some(proto::CommandAckResponse {
                        consumer_id: a.consumer_id,
                        request_id: Some(request_id),
                        error,
                        message,
                        ..Default::default()
                    });
                    self.send(encode_command(&cmd));
                }
                if let Ok(topic) = res {
                    inner.dispatch(&topic);
                }
            }
            Type::RedeliverUnacknowledgedMessages => {
                let Some(r) = &c.redeliver_unacknowledged_messages else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: r.consumer_id };
                if let Some(topic) = inner.state.redeliver(key, &r.message_ids) {
                    inner.dispatch(&topic);
                }
            }
            Type::CloseProducer => {
                let Some(p) = &c.close_producer else { return missing(inner, self) };
                inner.state.remove_producer(self.conn, p.producer_id);
                self.send(success_frame(p.request_id));
            }
            Type::CloseConsumer => {
                let Some(cc) = &c.close_consumer else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: cc.consumer_id };
                let topic = inner.state.remove_consumer(key);
                self.send(success_frame(cc.request_id));
                if let Some(topic) = topic {
                    inner.dispatch(&topic);
                }
            }
            Type::Unsubscribe => {
                let Some(u) = &c.unsubscribe else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: u.consumer_id };
                match inner.state.unsubscribe(key) {
                    Ok(_) => self.send(success_frame(u.request_id)),
                    Err((code, msg)) => self.refuse(inner, u.request_id, code, &msg),
                }
            }
            Type::GetLastMessageId => {
                let Some(g) = &c.get_last_message_id else { return missing(inner, self) };
                let key = ConsumerKey { conn: self.conn, consumer_id: g.consumer_id };
                let Some((topic, _)) = inner.state.consumer(key) else {
                    let msg = format!("consumer {} not found", g.consumer_id);
                    self.refuse(inner, g.request_id, ServerError::ConsumerNotFound, &msg);
                    return Flow::Continue;
                };
                let ledger = inner.state.topics.get(&topic).map(|t| t.ledger_id).unwrap_or(0);
                // An empty topic answers entry -1, as Pulsar does (encoded as uint64).
                let (l, e) = inner.state.last_entry(&topic).unwrap_or((ledger, u64::MAX));
                let mut cmd = base(Type::GetLastMessageIdResponse);
                cmd.get_last_message_id_response = Some(proto::CommandGetLastMessageIdResponse {
                    last_message_id: message_id(l, e),
                    request_id: g.request_id,
                    consumer_mark_delete_position: inner.state.mark_delete(key).map(|(l, e)| message_id(l, e)),
                });
                self.send(encode_command(&cmd));
            }
            other => {
                let msg = format!("the test broker does not support {}", other.as_str_name());
                self.refuse(inner, request_id(&c), ServerError::NotAllowedError, &msg);
            }
        }
        Flow::Continue
    }
}

/// Drops the connection's producers and consumers when the connection task ends, however
/// it ends (closed, failed, aborted).
struct CloseGuard {
    inner: Arc<Mutex<Inner>>,
    conn: ConnId,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        lock(&self.inner).close_connection(self.conn);
    }
}

/// Serves one connection until it closes.
pub async fn serve(
    inner: Arc<Mutex<Inner>>,
    conn: ConnId,
    stream: TcpStream,
    tx: mpsc::UnboundedSender<Out>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    url: String,
    ping_interval: Duration,
) {
    let _guard = CloseGuard { inner: inner.clone(), conn };
    let mut handler = Handler { conn, inner: inner.clone(), tx, url, connected: false };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let mut last_heard = Instant::now();
    // Set once the broker decided to close: nothing more is read, the queue is flushed.
    let mut closing = false;
    let why: String = 'conn: loop {
        tokio::select! {
            read = rd.read(&mut chunk), if !closing => {
                let n = match read {
                    Ok(0) => break 'conn "closed by the client".into(),
                    Ok(n) => n,
                    Err(e) => break 'conn format!("read error: {e}"),
                };
                last_heard = Instant::now();
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match frame::decode_frame(&buf) {
                        Ok(None) => break,
                        Ok(Some((f, used))) => {
                            buf.drain(..used);
                            if handler.handle(f) == Flow::Close {
                                closing = true;
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = handler.tx.send(Out::Frame(error_frame(0, ServerError::UnknownError, &e)));
                            let _ = handler.tx.send(Out::Close);
                            lock(&inner).events.push(format!("conn {conn}: bad frame, closing: {e}"));
                            closing = true;
                            break;
                        }
                    }
                }
            }
            out = rx.recv() => match out {
                Some(Out::Frame(bytes)) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        break 'conn format!("write error: {e}");
                    }
                }
                Some(Out::Close) | None => break 'conn "closed by the broker".into(),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > ping_interval * 2 {
                    break 'conn "keepalive timeout".into();
                }
                if wr.write_all(&ping_frame()).await.is_err() {
                    break 'conn "write error (ping)".into();
                }
            }
        }
    };
    let _ = wr.shutdown().await;
    lock(&inner).events.push(format!("conn {conn}: {why}"));
}
