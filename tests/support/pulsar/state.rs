//! The test broker's state as plain data, without I/O: topics (an append-only log of entries
//! per topic), producers, subscriptions (a durable cursor each) and their consumers, and the
//! dispatcher deciding which consumer gets which entry. The connection code turns commands
//! into calls here and the returned [`Delivery`]s into MESSAGE frames.
//!
//! Rules, as Pulsar applies them:
//! * an entry is what one SEND stored: one message, or a whole batch; it is delivered, acked
//!   and redelivered as a unit, and costs its number of messages in permits;
//! * a subscription created at `Latest` starts after the log's end, at `Earliest` at 0; its
//!   cursor (acked entries) outlives its consumers and is removed only by UNSUBSCRIBE;
//! * Exclusive: one consumer; Failover: the consumer first by (priority, name) gets
//!   everything; Shared: round robin over consumers with permits; Key_Shared: a key's hash
//!   (murmur3, 0..65536) picks the consumer, AUTO_SPLIT splitting the largest hash range for
//!   each new consumer (merging it back when it leaves), STICKY using the ranges consumers
//!   declare; an entry is held back while an earlier entry of its key is unacked at another
//!   consumer, so a key's order holds across consumer changes;
//! * an entry delivered and not acked goes back to the subscription (redelivery count + 1)
//!   when its consumer closes or asks for redelivery.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ::pulsar::message::proto::{
    command_ack::AckType, command_subscribe::InitialPosition, command_subscribe::SubType, KeySharedMeta, KeySharedMode,
    MessageIdData, MessageMetadata, ServerError,
};
use prost::Message as _;

use super::frame::parse_batch;

pub type ConnId = u64;

/// A consumer: its connection and the consumer id the client chose on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerKey {
    pub conn: ConnId,
    pub consumer_id: u64,
}

/// An error answered to the client: Pulsar's error code and a message.
pub type Refusal = (ServerError, String);

fn refuse<T>(code: ServerError, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

/// One message as stored (a batch entry lists each of its messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub ledger_id: u64,
    pub entry_id: u64,
    /// Index inside its batch, `None` for a message sent alone.
    pub batch_index: Option<i32>,
    /// The partition key (the "key" of the client APIs).
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub properties: Vec<(String, String)>,
    pub producer_name: String,
    pub sequence_id: u64,
    /// Milliseconds since the epoch, set by the producer.
    pub publish_time: u64,
    pub event_time: Option<u64>,
}

impl StoredMessage {
    /// The payload as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `ledger:entry` or `ledger:entry:batch_index`.
    pub fn id(&self) -> String {
        match self.batch_index {
            Some(i) => format!("{}:{}:{i}", self.ledger_id, self.entry_id),
            None => format!("{}:{}", self.ledger_id, self.entry_id),
        }
    }
}

/// What one SEND stored.
#[derive(Debug, Clone)]
pub struct Entry {
    pub entry_id: u64,
    /// The encoded `MessageMetadata`, forwarded to consumers as received.
    pub metadata: Vec<u8>,
    pub data: Vec<u8>,
    pub num_messages: u32,
    /// The key Key_Shared dispatches on.
    pub sticky_key: Vec<u8>,
    pub messages: Vec<StoredMessage>,
}

#[derive(Debug, Clone)]
struct ConsumerInfo {
    key: ConsumerKey,
    name: String,
    priority: i32,
    permits: i64,
    /// STICKY Key_Shared ranges (inclusive).
    ranges: Vec<(u32, u32)>,
}

/// A subscription: its cursor and its consumers.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub name: String,
    pub sub_type: SubType,
    /// First entry of the log this subscription covers.
    start: u64,
    /// Every entry below is acked.
    mark_delete: u64,
    /// Entries at or above `mark_delete` acked individually.
    acked: BTreeSet<u64>,
    /// Partially acked batches: the ack set of batch indexes still unacked (bit set = unacked).
    partial: HashMap<u64, Vec<i64>>,
    /// Delivered, not acked: entry id -> consumer.
    pending: BTreeMap<u64, ConsumerKey>,
    redeliveries: HashMap<u64, u32>,
    consumers: Vec<ConsumerInfo>,
    /// AUTO_SPLIT Key_Shared: inclusive hash ranges, sorted.
    auto_ranges: Vec<(u32, u32, ConsumerKey)>,
    round_robin: usize,
    key_shared_mode: KeySharedMode,
}

/// Key_Shared hash space, as Pulsar's (`DEFAULT_RANGE_SIZE`).
pub const HASH_RANGE_SIZE: u32 = 65536;

/// A topic: one ledger, its entries in order, its subscriptions.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub ledger_id: u64,
    pub entries: Vec<Entry>,
    pub subscriptions: BTreeMap<String, Subscription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    pub topic: String,
    pub name: String,
}

/// An entry to send to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub consumer: ConsumerKey,
    pub consumer_name: String,
    pub subscription: String,
    pub topic: String,
    pub ledger_id: u64,
    pub entry_id: u64,
    pub redelivery_count: u32,
}

/// Everything the broker knows.
#[derive(Debug, Default)]
pub struct BrokerState {
    pub topics: BTreeMap<String, Topic>,
    next_ledger: u64,
    producers: HashMap<(ConnId, u64), ProducerInfo>,
    producer_names: u64,
    consumers: HashMap<ConsumerKey, (String, String)>,
    injected: u64,
}

/// Full topic name of `name`: `persistent://public/default/{name}` for a short name,
/// `persistent://{tenant}/{ns}/{topic}` for the old form without domain; a full name is
/// checked and kept.
pub fn normalize_topic(name: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("invalid topic name '{name}': {why}"));
    if let Some((domain, rest)) = name.split_once("://") {
        if domain != "persistent" && domain != "non-persistent" {
            return bad("the domain must be persistent or non-persistent");
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return bad("a full name is {domain}://{tenant}/{namespace}/{topic}");
        }
        return Ok(name.to_string());
    }
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(format!("persistent://public/default/{t}")),
        [tenant, ns, t] if parts.iter().all(|p| !p.is_empty()) => Ok(format!("persistent://{tenant}/{ns}/{t}")),
        _ => bad("expected a short name or tenant/namespace/topic"),
    }
}

/// MurmurHash3 x86 32-bit, seed 0 (Pulsar's `Murmur3_32Hash`).
pub fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h: u32 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, b) in tail.iter().enumerate() {
            k |= (*b as u32) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The Key_Shared hash slot of a key.
pub fn key_hash(key: &[u8]) -> u32 {
    (murmur3_32(key) & i32::MAX as u32) % HASH_RANGE_SIZE
}

/// The key Key_Shared dispatches an entry on: the ordering key, else the partition key, else
/// for a batch its first message's, else `NONE_KEY` (Pulsar's `peekStickyKey`).
fn sticky_key(meta: &MessageMetadata, batch: &[(::pulsar::message::proto::SingleMessageMetadata, Vec<u8>)]) -> Vec<u8> {
    if let Some(k) = &meta.ordering_key {
        return k.clone();
    }
    if let Some(k) = &meta.partition_key {
        return k.as_bytes().to_vec();
    }
    if let Some((first, _)) = batch.first() {
        if let Some(k) = &first.ordering_key {
            return k.clone();
        }
        if let Some(k) = &first.partition_key {
            return k.as_bytes().to_vec();
        }
    }
    b"NONE_KEY".to_vec()
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Subscription {
    fn new(name: &str, sub_type: SubType, start: u64) -> Self {
        Subscription {
            name: name.to_string(),
            sub_type,
            start,
            mark_delete: start,
            acked: BTreeSet::new(),
            partial: HashMap::new(),
            pending: BTreeMap::new(),
            redeliveries: HashMap::new(),
            consumers: Vec::new(),
            auto_ranges: Vec::new(),
            round_robin: 0,
            key_shared_mode: KeySharedMode::AutoSplit,
        }
    }

    fn is_acked(&self, entry: u64) -> bool {
        entry < self.mark_delete || self.acked.contains(&entry)
    }

    fn ack_entry(&mut self, entry: u64) {
        if entry >= self.mark_delete {
            self.acked.insert(entry);
        }
        self.pending.remove(&entry);
        self.partial.remove(&entry);
        self.redeliveries.remove(&entry);
        while self.acked.remove(&self.mark_delete) {
            self.mark_delete += 1;
        }
    }

    fn ack_cumulative(&mut self, entry: u64) {
        let upto = entry + 1;
        if upto > self.mark_delete {
            self.mark_delete = upto;
        }
        self.acked = self.acked.split_off(&self.mark_delete);
        self.pending = self.pending.split_off(&self.mark_delete);
        self.partial.retain(|e, _| *e >= upto);
        self.redeliveries.retain(|e, _| *e >= upto);
        while self.acked.remove(&self.mark_delete) {
            self.mark_delete += 1;
        }
    }

    /// Puts `entries` (or all of `consumer`'s pending entries when `None`) back for delivery.
    fn redeliver(&mut self, consumer: ConsumerKey, entries: Option<&[u64]>) {
        let ids: Vec<u64> = match entries {
            Some(ids) => ids.iter().copied().filter(|e| self.pending.get(e) == Some(&consumer)).collect(),
            None => self.pending.iter().filter(|(_, c)| **c == consumer).map(|(e, _)| *e).collect(),
        };
        for e in ids {
            self.pending.remove(&e);
            *self.redeliveries.entry(e).or_insert(0) += 1;
        }
    }

    fn add_auto_range(&mut self, key: ConsumerKey) {
        if self.auto_ranges.is_empty() {
            self.auto_ranges.push((0, HASH_RANGE_SIZE - 1, key));
            return;
        }
        // Split the largest range (the first of equals): its owner keeps the lower half.
        let (i, _) = self
            .auto_ranges
            .iter()
            .enumerate()
            .max_by_key(|(i, (s, e, _))| (e - s, std::cmp::Reverse(*i)))
            .expect("non-empty");
        let (s, e, owner) = self.auto_ranges[i];
        if s == e {
            return; // cannot split a single slot (never with a handful of consumers)
        }
        let mid = s + (e - s) / 2;
        self.auto_ranges[i] = (s, mid, owner);
        self.auto_ranges.insert(i + 1, (mid + 1, e, key));
    }

    fn remove_auto_range(&mut self, key: ConsumerKey) {
        while let Some(i) = self.auto_ranges.iter().position(|(_, _, c)| *c == key) {
            let (s, e, _) = self.auto_ranges.remove(i);
            if i < self.auto_ranges.len() {
                self.auto_ranges[i].0 = s;
            } else if i > 0 {
                self.auto_ranges[i - 1].1 = e;
            }
        }
    }

    fn key_consumer(&self, key: &[u8]) -> Option<ConsumerKey> {
        let h = key_hash(key);
        match self.key_shared_mode {
            KeySharedMode::AutoSplit => {
                self.auto_ranges.iter().find(|(s, e, _)| *s <= h && h <= *e).map(|(_, _, c)| *c)
            }
            KeySharedMode::Sticky => {
                self.consumers.iter().find(|c| c.ranges.iter().any(|(s, e)| *s <= h && h <= *e)).map(|c| c.key)
            }
        }
    }

    fn consumer_mut(&mut self, key: ConsumerKey) -> Option<&mut ConsumerInfo> {
        self.consumers.iter_mut().find(|c| c.key == key)
    }

    /// The consumer receiving everything for Exclusive / Failover.
    fn active_consumer(&self) -> Option<ConsumerKey> {
        self.consumers
            .iter()
            .min_by(|a, b| (a.priority, &a.name, a.key).cmp(&(b.priority, &b.name, b.key)))
            .map(|c| c.key)
    }

    /// Unacked messages (a batch counts its messages) of `entries`.
    fn backlog(&self, entries: &[Entry]) -> usize {
        entries
            .iter()
            .skip(self.start as usize)
            .filter(|e| !self.is_acked(e.entry_id))
            .map(|e| e.num_messages as usize)
            .sum()
    }

    /// Acked messages of `entries` since the subscription started.
    fn acked_count(&self, entries: &[Entry]) -> usize {
        entries
            .iter()
            .skip(self.start as usize)
            .filter(|e| self.is_acked(e.entry_id))
            .map(|e| e.num_messages as usize)
            .sum()
    }

    /// Hands out entries to consumers with permits, in log order (redeliveries first since
    /// they are older), and returns (consumer, entry id, redelivery count).
    fn dispatch(&mut self, entries: &[Entry]) -> Vec<(ConsumerKey, u64, u32)> {
        let mut out = Vec::new();
        if self.consumers.is_empty() {
            return out;
        }
        // Key_Shared: which consumer holds an unacked entry of a key; keys held back.
        let mut key_owner: HashMap<Vec<u8>, ConsumerKey> = HashMap::new();
        let mut blocked: BTreeSet<Vec<u8>> = BTreeSet::new();
        let key_shared = self.sub_type == SubType::KeyShared;
        for entry in entries.iter().skip(self.mark_delete as usize) {
            let id = entry.entry_id;
            if self.is_acked(id) {
                continue;
            }
            if let Some(owner) = self.pending.get(&id) {
                if key_shared {
                    key_owner.entry(entry.sticky_key.clone()).or_insert(*owner);
                }
                continue;
            }
            let target = match self.sub_type {
                SubType::Exclusive | SubType::Failover => match self.active_consumer() {
                    Some(c) if self.consumers.iter().any(|i| i.key == c && i.permits > 0) => c,
                    _ => break,
                },
                SubType::Shared => {
                    let n = self.consumers.len();
                    let found = (0..n).map(|i| (self.round_robin + i) % n).find(|&i| self.consumers[i].permits > 0);
                    match found {
                        Some(i) => {
                            self.round_robin = (i + 1) % n;
                            self.consumers[i].key
                        }
                        None => break,
                    }
                }
                SubType::KeyShared => {
                    let key = &entry.sticky_key;
                    if blocked.contains(key) {
                        continue;
                    }
                    let Some(c) = self.key_consumer(key) else {
                        blocked.insert(key.clone());
                        continue;
                    };
                    let other_owner = key_owner.get(key).is_some_and(|o| *o != c);
                    let no_permits = !self.consumers.iter().any(|i| i.key == c && i.permits > 0);
                    if other_owner || no_permits {
                        blocked.insert(key.clone());
                        continue;
                    }
                    key_owner.insert(key.clone(), c);
                    c
                }
            };
            if let Some(c) = self.consumer_mut(target) {
                c.permits -= entry.num_messages as i64;
            }
            self.pending.insert(id, target);
            out.push((target, id, self.redeliveries.get(&id).copied().unwrap_or(0)));
        }
        out
    }
}

impl BrokerState {
    /// The topic `name` (a full name), created if new.
    pub fn topic_mut(&mut self, name: &str) -> &mut Topic {
        if !self.topics.contains_key(name) {
            self.next_ledger += 1;
            // Ledger ids differ per topic, as BookKeeper ledgers do.
            let ledger_id = 100 + self.next_ledger;
            let t = Topic { name: name.to_string(), ledger_id, entries: Vec::new(), subscriptions: BTreeMap::new() };
            self.topics.insert(name.to_string(), t);
        }
        self.topics.get_mut(name).expect("inserted above")
    }

    /// Registers a producer; answers its name (generated when absent, as
    /// `standalone-0-{n}`).
    pub fn add_producer(
        &mut self,
        conn: ConnId,
        producer_id: u64,
        topic: &str,
        name: Option<&str>,
    ) -> Result<String, Refusal> {
        if let Some(p) = self.producers.get(&(conn, producer_id)) {
            if p.topic == topic && name.is_none_or(|n| n == p.name) {
                return Ok(p.name.clone()); // the same PRODUCER again (a client retry)
            }
            return refuse(
                ServerError::ProducerBusy,
                format!("producer id {producer_id} is already used on this connection"),
            );
        }
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                self.producer_names += 1;
                format!("standalone-0-{}", self.producer_names)
            }
        };
        if self.producers.values().any(|p| p.topic == topic && p.name == name) {
            return refuse(
                ServerError::ProducerBusy,
                format!("Producer with name '{name}' is already connected to topic {topic}"),
            );
        }
        self.topic_mut(topic);
        self.producers.insert((conn, producer_id), ProducerInfo { topic: topic.to_string(), name: name.clone() });
        Ok(name)
    }

    pub fn producer(&self, conn: ConnId, producer_id: u64) -> Option<&ProducerInfo> {
        self.producers.get(&(conn, producer_id))
    }

    pub fn remove_producer(&mut self, conn: ConnId, producer_id: u64) -> bool {
        self.producers.remove(&(conn, producer_id)).is_some()
    }

    /// Appends one entry (an encoded `MessageMetadata` and its payload) to `topic`;
    /// answers (ledger id, entry id). A batch is split for the stored view; compressed or
    /// malformed payloads are refused.
    pub fn append(&mut self, topic: &str, metadata: &[u8], data: &[u8]) -> Result<(u64, u64), String> {
        let meta = MessageMetadata::decode(metadata).map_err(|e| format!("MessageMetadata does not decode: {e}"))?;
        if meta.compression.unwrap_or(0) != 0 {
            return Err(format!(
                "compression {} is not supported by the test broker (send uncompressed)",
                meta.compression.unwrap_or(0)
            ));
        }
        if meta.num_chunks_from_msg.unwrap_or(0) > 1 {
            return Err("chunked messages are not supported by the test broker".into());
        }
        let batch = match meta.num_messages_in_batch {
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| format!("negative num_messages_in_batch {n}"))?;
                parse_batch(n, data)?
            }
            None => Vec::new(),
        };
        let t = self.topic_mut(topic);
        let (ledger_id, entry_id) = (t.ledger_id, t.entries.len() as u64);
        let base = StoredMessage {
            topic: topic.to_string(),
            ledger_id,
            entry_id,
            batch_index: None,
            key: meta.partition_key.clone(),
            payload: data.to_vec(),
            properties: meta.properties.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect(),
            producer_name: meta.producer_name.clone(),
            sequence_id: meta.sequence_id,
            publish_time: meta.publish_time,
            event_time: meta.event_time.filter(|t| *t != 0),
        };
        let messages = if meta.num_messages_in_batch.is_some() {
            batch
                .iter()
                .enumerate()
                .map(|(i, (single, payload))| StoredMessage {
                    batch_index: Some(i as i32),
                    key: single.partition_key.clone(),
                    payload: payload.clone(),
                    properties: single.properties.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect(),
                    sequence_id: single.sequence_id.unwrap_or(meta.sequence_id + i as u64),
                    event_time: single.event_time.filter(|t| *t != 0),
                    ..base.clone()
                })
                .collect()
        } else {
            vec![base]
        };
        t.entries.push(Entry {
            entry_id,
            metadata: metadata.to_vec(),
            data: data.to_vec(),
            num_messages: messages.len().max(1) as u32,
            sticky_key: sticky_key(&meta, &batch),
            messages,
        });
        Ok((ledger_id, entry_id))
    }

    /// Appends a message as the broker's own producer `test-broker` would send it.
    pub fn inject(&mut self, topic: &str, key: Option<&str>, payload: &[u8]) -> (u64, u64) {
        let meta = MessageMetadata {
            producer_name: "test-broker".into(),
            sequence_id: self.injected,
            publish_time: now_millis(),
            partition_key: key.map(str::to_string),
            ..Default::default()
        };
        self.injected += 1;
        self.append(topic, &meta.encode_to_vec(), payload).expect("a metadata the broker encoded itself")
    }

    /// SUBSCRIBE: creates the subscription if new (at the log's end for `Latest`, its start
    /// for `Earliest`) and adds the consumer.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &mut self,
        key: ConsumerKey,
        topic: &str,
        subscription: &str,
        sub_type: SubType,
        consumer_name: &str,
        priority: i32,
        initial: InitialPosition,
        key_shared: Option<&KeySharedMeta>,
    ) -> Result<(), Refusal> {
        if let Some((t, s)) = self.consumers.get(&key) {
            if t == topic && s == subscription {
                return Ok(()); // the same SUBSCRIBE again (a client retry)
            }
            return refuse(
                ServerError::ConsumerBusy,
                format!("consumer id {} is already used on this connection", key.consumer_id),
            );
        }
        let mode = key_shared
            .and_then(|m| KeySharedMode::try_from(m.key_shared_mode).ok())
            .unwrap_or(KeySharedMode::AutoSplit);
        let ranges: Vec<(u32, u32)> = key_shared
            .map(|m| m.hash_ranges.iter().map(|r| (r.start.max(0) as u32, r.end.max(0) as u32)).collect())
            .unwrap_or_default();
        let t = self.topic_mut(topic);
        let end = t.entries.len() as u64;
        let sub = t.subscriptions.entry(subscription.to_string()).or_insert_with(|| {
            let start = if initial == InitialPosition::Earliest { 0 } else { end };
            Subscription::new(subscription, sub_type, start)
        });
        if !sub.consumers.is_empty() {
            if sub.sub_type != sub_type {
                return refuse(
                    ServerError::ConsumerBusy,
                    format!("Subscription {subscription} is of type {:?}, not {:?}", sub.sub_type, sub_type),
                );
            }
            if sub_type == SubType::Exclusive {
                return refuse(
                    ServerError::ConsumerBusy,
                    format!("Exclusive consumer is already connected to {subscription}"),
                );
            }
            if sub_type == SubType::KeyShared && sub.key_shared_mode != mode {
                return refuse(
                    ServerError::ConsumerAssignError,
                    "Key_Shared mode differs from the connected consumers'",
                );
            }
        }
        if sub_type == SubType::KeyShared && mode == KeySharedMode::Sticky {
            if ranges.is_empty() {
                return refuse(
                    ServerError::ConsumerAssignError,
                    "a STICKY Key_Shared consumer must declare hash ranges",
                );
            }
            let overlaps = sub
                .consumers
                .iter()
                .flat_map(|c| c.ranges.iter())
                .any(|(s, e)| ranges.iter().any(|(rs, re)| rs <= e && s <= re));
            if overlaps {
                return refuse(ServerError::ConsumerAssignError, "hash ranges overlap another consumer's");
            }
        }
        sub.sub_type = sub_type;
        sub.key_shared_mode = mode;
        sub.consumers.push(ConsumerInfo { key, name: consumer_name.to_string(), priority, permits: 0, ranges });
        if sub_type == SubType::KeyShared && mode == KeySharedMode::AutoSplit {
            sub.add_auto_range(key);
        }
        self.consumers.insert(key, (topic.to_string(), subscription.to_string()));
        Ok(())
    }

    /// The topic and subscription of a consumer.
    pub fn consumer(&self, key: ConsumerKey) -> Option<(String, String)> {
        self.consumers.get(&key).cloned()
    }

    fn sub_of_mut(&mut self, key: ConsumerKey) -> Option<(&mut Subscription, &[Entry])> {
        let (topic, sub) = self.consumers.get(&key)?;
        let t = self.topics.get_mut(topic)?;
        let s = t.subscriptions.get_mut(sub)?;
        Some((s, &t.entries))
    }

    /// FLOW: adds permits; answers the consumer's topic, or `None` for an unknown consumer.
    pub fn flow(&mut self, key: ConsumerKey, permits: u32) -> Option<String> {
        let (s, _) = self.sub_of_mut(key)?;
        s.consumer_mut(key)?.permits += permits as i64;
        self.consumers.get(&key).map(|(t, _)| t.clone())
    }

    /// ACK. Ids of another ledger or past the log's end are ignored (as Pulsar does);
    /// a cumulative ack on a Shared / Key_Shared subscription is refused.
    pub fn ack(&mut self, key: ConsumerKey, ack_type: AckType, ids: &[MessageIdData]) -> Result<String, Refusal> {
        let Some((topic, _)) = self.consumers.get(&key).cloned() else {
            return refuse(ServerError::ConsumerNotFound, format!("consumer {} not found", key.consumer_id));
        };
        let Some(ledger) = self.topics.get(&topic).map(|t| t.ledger_id) else {
            return refuse(ServerError::TopicNotFound, format!("topic {topic} not found"));
        };
        let (s, entries) = self.sub_of_mut(key).expect("consumer indexed");
        let len = entries.len() as u64;
        let valid = ids.iter().filter(|id| id.ledger_id == ledger && id.entry_id < len);
        match ack_type {
            AckType::Cumulative => {
                if matches!(s.sub_type, SubType::Shared | SubType::KeyShared) {
                    return refuse(
                        ServerError::NotAllowedError,
                        "cumulative ack is not allowed on a Shared or Key_Shared subscription",
                    );
                }
                if let Some(max) = valid.map(|id| id.entry_id).max() {
                    s.ack_cumulative(max);
                }
            }
            AckType::Individual => {
                for id in valid {
                    let entry = id.entry_id;
                    if id.ack_set.is_empty() {
                        s.ack_entry(entry);
                        continue;
                    }
                    // Batch index ack: the entry is acked once no index remains unacked.
                    let size = entries[entry as usize].num_messages as usize;
                    let mask = s.partial.entry(entry).or_insert_with(|| id.ack_set.clone());
                    for (m, a) in mask.iter_mut().zip(id.ack_set.iter()) {
                        *m &= *a;
                    }
                    let unacked = (0..size).any(|i| mask.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0));
                    if !unacked {
                        s.ack_entry(entry);
                    }
                }
            }
        }
        Ok(topic)
    }

    /// REDELIVER_UNACKNOWLEDGED_MESSAGES: the given entries (all of the consumer's unacked
    /// ones when empty) go back for delivery. Answers the consumer's topic.
    pub fn redeliver(&mut self, key: ConsumerKey, ids: &[MessageIdData]) -> Option<String> {
        let topic = self.consumers.get(&key)?.0.clone();
        let (s, _) = self.sub_of_mut(key)?;
        if ids.is_empty() {
            s.redeliver(key, None);
        } else {
            let entries: Vec<u64> = ids.iter().map(|id| id.entry_id).collect();
            s.redeliver(key, Some(&entries));
        }
        Some(topic)
    }

    /// CLOSE_CONSUMER (or its connection closing): its unacked entries go back.
    pub fn remove_consumer(&mut self, key: ConsumerKey) -> Option<String> {
        let (s, _) = self.sub_of_mut(key)?;
        s.redeliver(key, None);
        s.consumers.retain(|c| c.key != key);
        s.remove_auto_range(key);
        if s.consumers.is_empty() {
            s.round_robin = 0;
        }
        self.consumers.remove(&key).map(|(t, _)| t)
    }

    /// UNSUBSCRIBE: deletes the subscription, refused while other consumers are connected.
    pub fn unsubscribe(&mut self, key: ConsumerKey) -> Result<String, Refusal> {
        let Some((topic, sub)) = self.consumers.get(&key).cloned() else {
            return refuse(ServerError::ConsumerNotFound, format!("consumer {} not found", key.consumer_id));
        };
        let (s, _) = self.sub_of_mut(key).expect("consumer indexed");
        if s.consumers.iter().any(|c| c.key != key) {
            return refuse(ServerError::ConsumerBusy, format!("Subscription {sub} has other connected consumers"));
        }
        self.consumers.remove(&key);
        if let Some(t) = self.topics.get_mut(&topic) {
            t.subscriptions.remove(&sub);
        }
        Ok(topic)
    }

    /// A connection closed: drops its producers and consumers; answers the topics whose
    /// subscriptions changed.
    pub fn close_connection(&mut self, conn: ConnId) -> BTreeSet<String> {
        self.producers.retain(|(c, _), _| *c != conn);
        let keys: Vec<ConsumerKey> = self.consumers.keys().filter(|k| k.conn == conn).copied().collect();
        keys.into_iter().filter_map(|k| self.remove_consumer(k)).collect()
    }

    /// Runs the dispatcher of every subscription of `topic`.
    pub fn dispatch(&mut self, topic: &str) -> Vec<Delivery> {
        let Some(t) = self.topics.get_mut(topic) else { return Vec::new() };
        let mut out = Vec::new();
        for s in t.subscriptions.values_mut() {
            for (consumer, entry_id, redelivery_count) in s.dispatch(&t.entries) {
                let consumer_name =
                    s.consumers.iter().find(|c| c.key == consumer).map(|c| c.name.clone()).unwrap_or_default();
                out.push(Delivery {
                    consumer,
                    consumer_name,
                    subscription: s.name.clone(),
                    topic: t.name.clone(),
                    ledger_id: t.ledger_id,
                    entry_id,
                    redelivery_count,
                });
            }
        }
        out
    }

    pub fn entry(&self, topic: &str, entry_id: u64) -> Option<&Entry> {
        self.topics.get(topic)?.entries.get(entry_id as usize)
    }

    /// (ledger id, last entry id) of a topic, `None` when it is empty or unknown.
    pub fn last_entry(&self, topic: &str) -> Option<(u64, u64)> {
        let t = self.topics.get(topic)?;
        t.entries.last().map(|e| (t.ledger_id, e.entry_id))
    }

    /// The cursor's mark-delete position: (ledger, last entry acked in order), if any.
    pub fn mark_delete(&self, key: ConsumerKey) -> Option<(u64, u64)> {
        let (topic, sub) = self.consumers.get(&key)?;
        let t = self.topics.get(topic)?;
        let s = t.subscriptions.get(sub)?;
        s.mark_delete.checked_sub(1).map(|e| (t.ledger_id, e))
    }

    pub fn messages(&self, topic: &str) -> Vec<StoredMessage> {
        self.topics
            .get(topic)
            .map(|t| t.entries.iter().flat_map(|e| e.messages.iter().cloned()).collect())
            .unwrap_or_default()
    }

    fn subscription(&self, topic: &str, sub: &str) -> Option<(&Subscription, &[Entry])> {
        let t = self.topics.get(topic)?;
        Some((t.subscriptions.get(sub)?, &t.entries))
    }

    /// Messages acked on a subscription (0 when unknown).
    pub fn acked(&self, topic: &str, sub: &str) -> usize {
        self.subscription(topic, sub).map(|(s, e)| s.acked_count(e)).unwrap_or(0)
    }

    /// Messages not acked yet on a subscription (0 when unknown).
    pub fn backlog(&self, topic: &str, sub: &str) -> usize {
        self.subscription(topic, sub).map(|(s, e)| s.backlog(e)).unwrap_or(0)
    }

    /// Connected consumers of a subscription.
    pub fn consumer_count(&self, topic: &str, sub: &str) -> usize {
        self.subscription(topic, sub).map(|(s, _)| s.consumers.len()).unwrap_or(0)
    }

    /// Messages delivered and not acked, per consumer name, of a subscription.
    pub fn unacked_by_consumer(&self, topic: &str, sub: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Some((s, entries)) = self.subscription(topic, sub) {
            for (entry, c) in &s.pending {
                let name = s.consumers.iter().find(|i| i.key == *c).map(|i| i.name.clone()).unwrap_or_default();
                *out.entry(name).or_insert(0) += entries[*entry as usize].num_messages as usize;
            }
        }
        out
    }

    pub fn producer_count(&self, topic: &str) -> usize {
        self.producers.values().filter(|p| p.topic == topic).count()
    }
}
