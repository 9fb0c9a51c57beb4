//! The Pulsar test broker (tests/support/pulsar/) against clients written elsewhere: the Rust
//! `pulsar` crate and Apache's `pulsar-client` (C++ inside, in a Python venv made by
//! scripts/pulsar-client-venv.sh); a raw TCP client for refused frames; and unit tests of its
//! framing and protocol state.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use pulsar::consumer::InitialPosition as RustInitialPosition;
use pulsar::message::proto::{
    self, base_command::Type, command_ack::AckType, command_subscribe::InitialPosition, command_subscribe::SubType,
    KeySharedMeta, KeySharedMode, MessageIdData, MessageMetadata, ServerError, SingleMessageMetadata,
};
use pulsar::{Consumer, ConsumerOptions, Pulsar, TokioExecutor};
use support::pulsar::frame::{self, base, crc32c, decode_frame, encode_command, encode_payload_command};
use support::pulsar::state::{key_hash, murmur3_32, normalize_topic, BrokerState, ConsumerKey};
use support::pulsar::{PulsarBroker, PulsarOptions};
use support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Unit tests: framing

#[test]
fn crc32c_matches_the_castagnoli_check_values() {
    // The standard check value of CRC-32C, and RFC 3720's (iSCSI) test vectors.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
}

#[test]
fn murmur3_matches_reference_values() {
    // MurmurHash3_x86_32 with seed 0 (reference values of the SMHasher implementation).
    assert_eq!(murmur3_32(b""), 0);
    assert_eq!(murmur3_32(b"hello"), 0x248b_fa47);
    assert_eq!(murmur3_32(b"Hello, world!"), 0xc036_3e43);
    assert!(key_hash(b"any key") < 65536);
}

fn ping() -> proto::BaseCommand {
    let mut c = base(Type::Ping);
    c.ping = Some(proto::CommandPing {});
    c
}

#[test]
fn simple_and_payload_frames_round_trip_and_checksums_are_verified() {
    let bytes = encode_command(&ping());
    assert_eq!(u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len() - 4);
    // Incomplete input asks for more.
    for cut in 0..bytes.len() {
        assert!(decode_frame(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
    }
    let (f, used) = decode_frame(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(f.command.r#type, Type::Ping as i32);
    assert!(f.payload.is_none());

    let meta = MessageMetadata { producer_name: "p".into(), sequence_id: 7, publish_time: 1, ..Default::default() };
    let mut send = base(Type::Send);
    send.send = Some(proto::CommandSend { producer_id: 1, sequence_id: 7, ..Default::default() });
    let mut bytes = encode_payload_command(&send, &meta.encode_to_vec(), b"hello");
    let (f, _) = decode_frame(&bytes).unwrap().unwrap();
    let p = f.payload.unwrap();
    assert!(p.checksum_ok());
    assert_eq!(p.data, b"hello");
    assert_eq!(MessageMetadata::decode(&p.metadata[..]).unwrap(), meta);
    // Flip a payload byte: same frame, wrong checksum.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let (f, _) = decode_frame(&bytes).unwrap().unwrap();
    assert!(!f.payload.unwrap().checksum_ok());
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    // commandSize larger than the frame.
    let mut b = 8u32.to_be_bytes().to_vec();
    b.extend_from_slice(&100u32.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    assert!(decode_frame(&b).unwrap_err().contains("commandSize"));
    // Oversized frame.
    assert!(decode_frame(&u32::MAX.to_be_bytes()).unwrap_err().contains("exceeds"));
    // Garbage command bytes.
    let mut b = 8u32.to_be_bytes().to_vec();
    b.extend_from_slice(&4u32.to_be_bytes());
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert!(decode_frame(&b).unwrap_err().contains("BaseCommand"));
    // A batch whose sizes lie.
    assert!(frame::parse_batch(2, &[0, 0, 0, 1, 0x18]).is_err());
}

#[test]
fn batches_split_into_keyed_messages() {
    let msgs: Vec<(SingleMessageMetadata, Vec<u8>)> = (0..3)
        .map(|i| {
            let m = SingleMessageMetadata {
                partition_key: Some(format!("k{i}")),
                sequence_id: Some(10 + i),
                ..Default::default()
            };
            (m, format!("v{i}").into_bytes())
        })
        .collect();
    let data = frame::encode_batch(&msgs);
    let parsed = frame::parse_batch(3, &data).unwrap();
    assert_eq!(
        parsed.iter().map(|(m, p)| (m.partition_key.clone().unwrap(), p.clone())).collect::<Vec<_>>(),
        vec![
            ("k0".to_string(), b"v0".to_vec()),
            ("k1".to_string(), b"v1".to_vec()),
            ("k2".to_string(), b"v2".to_vec())
        ]
    );
    let mut state = BrokerState::default();
    let meta = MessageMetadata {
        producer_name: "p".into(),
        sequence_id: 10,
        publish_time: 5,
        num_messages_in_batch: Some(3),
        ..Default::default()
    };
    let t = "persistent://public/default/b";
    state.append(t, &meta.encode_to_vec(), &data).unwrap();
    let stored = state.messages(t);
    assert_eq!(stored.iter().map(|m| m.key.clone().unwrap()).collect::<Vec<_>>(), ["k0", "k1", "k2"]);
    assert_eq!(stored.iter().map(|m| m.sequence_id).collect::<Vec<_>>(), [10, 11, 12]);
    assert_eq!(stored[2].id(), format!("{}:0:2", stored[2].ledger_id));
    // A batch count that does not match the payload is refused, nothing stored.
    let bad = MessageMetadata { num_messages_in_batch: Some(4), ..meta };
    assert!(state.append(t, &bad.encode_to_vec(), &data).is_err());
    assert_eq!(state.messages(t).len(), 3);
}

#[test]
fn topic_names_are_normalised() {
    assert_eq!(normalize_topic("smartcity-traffic").unwrap(), "persistent://public/default/smartcity-traffic");
    assert_eq!(normalize_topic("city/ns/t").unwrap(), "persistent://city/ns/t");
    assert_eq!(normalize_topic("persistent://public/default/x").unwrap(), "persistent://public/default/x");
    assert!(normalize_topic("http://a/b/c").is_err());
    assert!(normalize_topic("a/b").is_err());
    assert!(normalize_topic("").is_err());
}

// ---------------------------------------------------------------------------------------------
// Unit tests: protocol state

const T: &str = "persistent://public/default/t";

fn key(conn: u64, id: u64) -> ConsumerKey {
    ConsumerKey { conn, consumer_id: id }
}

fn append_keyed(state: &mut BrokerState, key: &str, n: u64) {
    let meta = MessageMetadata {
        producer_name: "p".into(),
        sequence_id: n,
        publish_time: 1,
        partition_key: Some(key.into()),
        ..Default::default()
    };
    state.append(T, &meta.encode_to_vec(), format!("{key}-{n}").as_bytes()).unwrap();
}

fn sub(state: &mut BrokerState, k: ConsumerKey, name: &str, t: SubType, pos: InitialPosition) -> Result<(), String> {
    state.subscribe(k, T, "s", t, name, 0, pos, None).map_err(|(c, m)| format!("{c:?}: {m}"))
}

fn id(state: &BrokerState, entry: u64) -> MessageIdData {
    MessageIdData { ledger_id: state.topics[T].ledger_id, entry_id: entry, ..Default::default() }
}

#[test]
fn exclusive_dispatch_follows_permits_and_acks_move_the_cursor() {
    let mut s = BrokerState::default();
    for i in 0..3 {
        append_keyed(&mut s, "a", i);
    }
    let c = key(1, 1);
    sub(&mut s, c, "c", SubType::Exclusive, InitialPosition::Earliest).unwrap();
    assert!(s.dispatch(T).is_empty(), "no permits, no messages");
    s.flow(c, 2);
    let d: Vec<u64> = s.dispatch(T).iter().map(|d| d.entry_id).collect();
    assert_eq!(d, [0, 1]);
    // A second exclusive consumer is refused.
    assert!(sub(&mut s, key(2, 1), "other", SubType::Exclusive, InitialPosition::Earliest)
        .unwrap_err()
        .contains("ConsumerBusy"));
    s.ack(c, AckType::Individual, &[id(&s, 1)]).unwrap();
    assert_eq!((s.acked(T, "s"), s.backlog(T, "s")), (1, 2));
    s.ack(c, AckType::Cumulative, &[id(&s, 0)]).unwrap();
    assert_eq!((s.acked(T, "s"), s.backlog(T, "s")), (2, 1));
    s.flow(c, 5);
    assert_eq!(s.dispatch(T).iter().map(|d| d.entry_id).collect::<Vec<_>>(), [2]);
    // Unknown ledgers and entries are ignored.
    s.ack(c, AckType::Individual, &[MessageIdData { ledger_id: 999, entry_id: 2, ..Default::default() }]).unwrap();
    assert_eq!(s.backlog(T, "s"), 1);
}

#[test]
fn latest_subscriptions_start_at_the_end_and_cursors_outlive_consumers() {
    let mut s = BrokerState::default();
    append_keyed(&mut s, "a", 0);
    let c = key(1, 1);
    sub(&mut s, c, "c", SubType::Shared, InitialPosition::Latest).unwrap();
    s.flow(c, 10);
    assert!(s.dispatch(T).is_empty());
    append_keyed(&mut s, "a", 1);
    append_keyed(&mut s, "a", 2);
    assert_eq!(s.dispatch(T).iter().map(|d| d.entry_id).collect::<Vec<_>>(), [1, 2]);
    s.ack(c, AckType::Individual, &[id(&s, 1)]).unwrap();
    // The consumer leaves: entry 2 goes back; a new consumer gets it, redelivery count 1.
    s.close_connection(1);
    assert_eq!(s.backlog(T, "s"), 1);
    let c2 = key(2, 1);
    sub(&mut s, c2, "c2", SubType::Shared, InitialPosition::Latest).unwrap();
    s.flow(c2, 10);
    let d = s.dispatch(T);
    assert_eq!((d.len(), d[0].entry_id, d[0].redelivery_count), (1, 2, 1));
    // Cumulative acks are refused on Shared.
    assert!(s.ack(c2, AckType::Cumulative, &[id(&s, 2)]).is_err());
    s.ack(c2, AckType::Individual, &[id(&s, 2)]).unwrap();
    assert_eq!((s.acked(T, "s"), s.backlog(T, "s")), (2, 0));
    s.unsubscribe(c2).unwrap();
    assert_eq!(s.consumer_count(T, "s"), 0);
    assert!(s.topics[T].subscriptions.is_empty());
}

#[test]
fn shared_round_robin_and_redeliver_request() {
    let mut s = BrokerState::default();
    let (a, b) = (key(1, 1), key(1, 2));
    sub(&mut s, a, "a", SubType::Shared, InitialPosition::Earliest).unwrap();
    sub(&mut s, b, "b", SubType::Shared, InitialPosition::Earliest).unwrap();
    s.flow(a, 100);
    s.flow(b, 100);
    for i in 0..4 {
        append_keyed(&mut s, "k", i);
    }
    let d = s.dispatch(T);
    let to = |c: ConsumerKey| d.iter().filter(|d| d.consumer == c).count();
    assert_eq!((to(a), to(b)), (2, 2));
    s.redeliver(a, &[]);
    let again = s.dispatch(T);
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|d| d.redelivery_count == 1));
}

#[test]
fn failover_sends_everything_to_the_first_consumer_by_priority_and_name() {
    let mut s = BrokerState::default();
    let (b, a) = (key(1, 1), key(2, 1));
    s.subscribe(b, T, "s", SubType::Failover, "b", 0, InitialPosition::Earliest, None).unwrap();
    s.subscribe(a, T, "s", SubType::Failover, "a", 0, InitialPosition::Earliest, None).unwrap();
    assert_eq!(
        s.subscribe(key(3, 1), T, "s", SubType::Shared, "c", 0, InitialPosition::Earliest, None).unwrap_err().0,
        ServerError::ConsumerBusy
    );
    s.flow(a, 10);
    s.flow(b, 10);
    for i in 0..3 {
        append_keyed(&mut s, "k", i);
    }
    assert!(s.dispatch(T).iter().all(|d| d.consumer == a), "'a' sorts first");
    // 'a' goes: its unacked entries fail over to 'b'.
    s.remove_consumer(a);
    let d = s.dispatch(T);
    assert_eq!(d.len(), 3);
    assert!(d.iter().all(|d| d.consumer == b && d.redelivery_count == 1));
}

#[test]
fn key_shared_keeps_each_key_on_one_consumer_and_in_order() {
    let mut s = BrokerState::default();
    let (a, b) = (key(1, 1), key(2, 1));
    sub(&mut s, a, "a", SubType::KeyShared, InitialPosition::Earliest).unwrap();
    sub(&mut s, b, "b", SubType::KeyShared, InitialPosition::Earliest).unwrap();
    s.flow(a, 1000);
    s.flow(b, 1000);
    let keys: Vec<String> = (0..20).map(|i| format!("sensor-{i}")).collect();
    for round in 0..5 {
        for k in &keys {
            append_keyed(&mut s, k, round);
        }
    }
    let d = s.dispatch(T);
    assert_eq!(d.len(), 100);
    let mut owner: HashMap<Vec<u8>, ConsumerKey> = HashMap::new();
    for x in &d {
        let k = s.entry(T, x.entry_id).unwrap().sticky_key.clone();
        assert_eq!(*owner.entry(k).or_insert(x.consumer), x.consumer, "a key went to two consumers");
    }
    let used: BTreeSet<ConsumerKey> = owner.values().copied().collect();
    assert_eq!(used.len(), 2, "20 keys over two halves of the hash space use both consumers");
    // b leaves with everything unacked: its keys go to a, after a's own, in log order.
    s.ack(
        a,
        AckType::Individual,
        &d.iter().filter(|x| x.consumer == a).map(|x| id(&s, x.entry_id)).collect::<Vec<_>>(),
    )
    .unwrap();
    s.remove_consumer(b);
    let again = s.dispatch(T);
    assert!(again.iter().all(|x| x.consumer == a && x.redelivery_count == 1));
    let ids: Vec<u64> = again.iter().map(|x| x.entry_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(ids.len(), d.iter().filter(|x| x.consumer == b).count());
}

#[test]
fn key_shared_holds_a_key_back_while_another_consumer_has_it_unacked() {
    let mut s = BrokerState::default();
    let a = key(1, 1);
    sub(&mut s, a, "a", SubType::KeyShared, InitialPosition::Earliest).unwrap();
    s.flow(a, 1000);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for k in &keys {
        append_keyed(&mut s, k, 0);
    }
    assert_eq!(s.dispatch(T).len(), 20);
    // b joins and takes half the hash space; new entries of keys moved to b wait until a acks.
    let b = key(2, 1);
    sub(&mut s, b, "b", SubType::KeyShared, InitialPosition::Earliest).unwrap();
    s.flow(b, 1000);
    for k in &keys {
        append_keyed(&mut s, k, 1);
    }
    let d = s.dispatch(T);
    assert!(d.iter().all(|x| x.consumer == a), "only keys staying on a move on: {d:?}");
    let held = 20 - d.len();
    assert!(held > 0);
    let all_a: Vec<MessageIdData> = (0..40).map(|e| id(&s, e)).collect();
    s.ack(a, AckType::Individual, &all_a[..20]).unwrap();
    let d = s.dispatch(T);
    assert_eq!(d.len(), held);
    assert!(d.iter().all(|x| x.consumer == b));
}

#[test]
fn sticky_key_shared_uses_declared_ranges() {
    let mut s = BrokerState::default();
    let meta = |lo: i32, hi: i32| KeySharedMeta {
        key_shared_mode: KeySharedMode::Sticky as i32,
        hash_ranges: vec![proto::IntRange { start: lo, end: hi }],
        allow_out_of_order_delivery: None,
    };
    let (a, b) = (key(1, 1), key(1, 2));
    s.subscribe(a, T, "s", SubType::KeyShared, "a", 0, InitialPosition::Earliest, Some(&meta(0, 32767))).unwrap();
    let overlap =
        s.subscribe(b, T, "s", SubType::KeyShared, "b", 0, InitialPosition::Earliest, Some(&meta(30000, 65535)));
    assert_eq!(overlap.unwrap_err().0, ServerError::ConsumerAssignError);
    s.subscribe(b, T, "s", SubType::KeyShared, "b", 0, InitialPosition::Earliest, Some(&meta(32768, 65535))).unwrap();
    s.flow(a, 100);
    s.flow(b, 100);
    for i in 0..10 {
        append_keyed(&mut s, &format!("k{i}"), 0);
    }
    for d in s.dispatch(T) {
        let h = key_hash(&s.entry(T, d.entry_id).unwrap().sticky_key);
        assert_eq!(d.consumer, if h < 32768 { a } else { b });
    }
}

#[test]
fn batch_ack_sets_ack_the_entry_when_every_index_is_acked() {
    let mut s = BrokerState::default();
    let msgs: Vec<(SingleMessageMetadata, Vec<u8>)> =
        (0..3).map(|i| (SingleMessageMetadata::default(), vec![i as u8])).collect();
    let meta = MessageMetadata { producer_name: "p".into(), num_messages_in_batch: Some(3), ..Default::default() };
    s.append(T, &meta.encode_to_vec(), &frame::encode_batch(&msgs)).unwrap();
    let c = key(1, 1);
    sub(&mut s, c, "c", SubType::Exclusive, InitialPosition::Earliest).unwrap();
    s.flow(c, 1);
    assert_eq!(s.dispatch(T).len(), 1, "a batch goes out whole even with fewer permits");
    assert_eq!(s.backlog(T, "s"), 3);
    // ack set: bit set = still unacked. Index 0 acked, then 1 and 2.
    let first = id(&s, 0);
    let with_set = |set: i64| MessageIdData { ack_set: vec![set], batch_size: Some(3), ..first.clone() };
    s.ack(c, AckType::Individual, &[with_set(0b110)]).unwrap();
    assert_eq!(s.backlog(T, "s"), 3);
    s.ack(c, AckType::Individual, &[with_set(0b100)]).unwrap();
    assert_eq!(s.backlog(T, "s"), 3, "index 2 is still unacked");
    s.ack(c, AckType::Individual, &[with_set(0b011)]).unwrap();
    assert_eq!((s.backlog(T, "s"), s.acked(T, "s")), (0, 3));
}

// ---------------------------------------------------------------------------------------------
// The Rust `pulsar` crate against the broker

type Client = Pulsar<TokioExecutor>;

async fn rust_client(broker: &PulsarBroker) -> Client {
    Pulsar::builder(broker.url(), TokioExecutor)
        .build()
        .await
        .unwrap_or_else(|e| panic!("pulsar crate: connect to {}: {e}", broker.url()))
}

async fn rust_consumer(
    client: &Client,
    topic: &str,
    sub: &str,
    t: SubType,
    name: &str,
) -> Consumer<String, TokioExecutor> {
    client
        .consumer()
        .with_topic(topic)
        .with_subscription(sub)
        .with_subscription_type(t)
        .with_consumer_name(name)
        .with_options(ConsumerOptions::default().with_initial_position(RustInitialPosition::Earliest))
        .build()
        .await
        .unwrap_or_else(|e| panic!("pulsar crate: subscribe {sub} on {topic}: {e}"))
}

/// One message as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    consumer: String,
    topic: String,
    key: Option<String>,
    payload: String,
    properties: BTreeMap<String, String>,
}

type Received = Arc<Mutex<Vec<Got>>>;

/// Reads (and acks) everything `consumer` receives into `out`, until aborted.
fn read_all(mut consumer: Consumer<String, TokioExecutor>, name: &str, out: Received) -> tokio::task::JoinHandle<()> {
    let name = name.to_string();
    tokio::spawn(async move {
        while let Some(msg) = consumer.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consumer {name}: {e}");
                    continue;
                }
            };
            let payload = msg.deserialize().unwrap_or_else(|e| format!("<not UTF-8: {e}>"));
            let properties = msg.metadata().properties.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
            // The crate names the topic as the consumer was given it: compare full names.
            let topic = normalize_topic(&msg.topic).unwrap_or_else(|_| msg.topic.clone());
            let got = Got { consumer: name.clone(), topic, key: msg.key(), payload, properties };
            out.lock().unwrap().push(got);
            if let Err(e) = consumer.ack(&msg).await {
                eprintln!("consumer {name}: ack: {e}");
            }
        }
    })
}

fn received(out: &Received) -> Vec<Got> {
    out.lock().unwrap().clone()
}

/// `n` keyed messages per key round: key `sensor-{i % keys}`, payload `{key}:{i}`.
fn keyed(n: usize, keys: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("sensor-{}", i % keys), format!("sensor-{}:{i}", i % keys))).collect()
}

async fn rust_send(producer: &mut pulsar::Producer<TokioExecutor>, key: &str, payload: &str, seq: usize) {
    let receipt = producer
        .create_message()
        .with_content(payload.to_string())
        .with_key(key)
        .with_property("seq", seq.to_string())
        .with_property("origin", "rust")
        .send_non_blocking()
        .await
        .unwrap_or_else(|e| panic!("pulsar crate: send {payload}: {e}"));
    let receipt = receipt.await.unwrap_or_else(|e| panic!("pulsar crate: receipt of {payload}: {e}"));
    assert!(receipt.message_id.is_some(), "receipt without a message id: {receipt:?}");
}

/// The payload's sequence number (`sensor-3:42` -> 42).
fn seq_of(payload: &str) -> usize {
    payload.rsplit(':').next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no sequence in {payload:?}"))
}

/// Per consumer and key, the sequence numbers are increasing.
fn assert_key_order(got: &[Got]) {
    let mut last: HashMap<(String, String, Option<String>), usize> = HashMap::new();
    for g in got {
        let s = seq_of(&g.payload);
        if let Some(prev) = last.insert((g.consumer.clone(), g.topic.clone(), g.key.clone()), s) {
            assert!(prev < s, "{}: key {:?} out of order on {}: {prev} then {s}", g.consumer, g.key, g.topic);
        }
    }
}

/// Like [`assert_key_order`] across reconnections: a message whose ack was cut with the
/// connection comes again (at least once), so only first deliveries must be in order.
fn assert_key_order_first_seen(got: &[Got]) {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<Got> = got.iter().filter(|g| seen.insert(g.payload.clone())).cloned().collect();
    assert_key_order(&firsts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_crate_produces_and_consumes_with_key_shared_and_shared_subscriptions() {
    let broker = ok(PulsarBroker::start().await);
    let client = rust_client(&broker).await;
    let topics = ["persistent://public/default/smartcity-traffic", "smartcity-air-quality"];
    let full = |t: &str| normalize_topic(t).unwrap();
    const N: usize = 80;
    const KEYS: usize = 8;

    // Subscriptions first (two Key_Shared consumers, two Shared consumers per topic).
    let out: Received = Arc::default();
    let mut readers = Vec::new();
    for t in topics {
        for (sub, ty, names) in
            [("twin-keyed", SubType::KeyShared, ["ks-a", "ks-b"]), ("twin-shared", SubType::Shared, ["sh-a", "sh-b"])]
        {
            for name in names {
                let c = rust_consumer(&client, t, sub, ty, name).await;
                readers.push(read_all(c, name, out.clone()));
            }
            assert_eq!(broker.consumers(t, sub), 2);
        }
    }

    let messages = keyed(N, KEYS);
    for (i, t) in topics.iter().enumerate() {
        let mut producer = client
            .producer()
            .with_topic(*t)
            .with_name(format!("twinrt-{i}"))
            .build()
            .await
            .unwrap_or_else(|e| panic!("producer on {t}: {e}"));
        for (seq, (k, p)) in messages.iter().enumerate() {
            rust_send(&mut producer, k, p, seq).await;
        }
        let stored = broker.messages(t);
        assert_eq!(stored.len(), N, "{t}");
        for (seq, (m, (k, p))) in stored.iter().zip(&messages).enumerate() {
            assert_eq!((m.key.as_deref(), m.text().as_str()), (Some(k.as_str()), p.as_str()));
            assert_eq!(m.producer_name, format!("twinrt-{i}"));
            assert_eq!(m.property("seq"), Some(seq.to_string().as_str()));
            assert_eq!(m.entry_id, seq as u64, "entry ids increase by one");
            assert_eq!(m.sequence_id, seq as u64);
            assert!(m.publish_time > 1_600_000_000_000, "publish time in ms: {}", m.publish_time);
            assert_eq!(m.topic, full(t));
        }
        producer.close().await.unwrap_or_else(|e| panic!("close producer: {e}"));
    }
    assert_eq!(broker.topics(), vec![full(topics[1]), full(topics[0])]);
    assert_ne!(broker.messages(topics[0])[0].ledger_id, broker.messages(topics[1])[0].ledger_id);

    let total = 2 * 2 * N;
    ok(wait_until(&format!("{total} deliveries"), DEADLINE, || received(&out).len() >= total).await);
    for t in topics {
        for sub in ["twin-keyed", "twin-shared"] {
            ok(wait_until(&format!("backlog of {sub} on {t} to reach 0"), DEADLINE, || broker.backlog(t, sub) == 0)
                .await);
            assert_eq!(broker.acked(t, sub), N);
        }
    }
    let got = received(&out);
    assert_eq!(got.len(), total, "no duplicates: {got:?}");
    let want: BTreeSet<(String, String)> = messages.iter().cloned().collect();
    for t in topics {
        for prefix in ["ks-", "sh-"] {
            let seen: BTreeSet<(String, String)> = got
                .iter()
                .filter(|g| g.topic == full(t) && g.consumer.starts_with(prefix))
                .map(|g| (g.key.clone().unwrap_or_default(), g.payload.clone()))
                .collect();
            assert_eq!(seen, want, "every message arrives on {prefix}* of {t}");
        }
        for name in ["sh-a", "sh-b", "ks-a", "ks-b"] {
            assert!(got.iter().any(|g| g.topic == full(t) && g.consumer == name), "{name} received nothing on {t}");
        }
    }
    // Key_Shared: each key on one consumer, the one whose half of the hash space holds it
    // (ks-a subscribed first and kept 0..=32767 when ks-b split the range), in order.
    let keyed_got: Vec<Got> = got.iter().filter(|g| g.consumer.starts_with("ks-")).cloned().collect();
    for g in &keyed_got {
        let k = g.key.clone().unwrap();
        let expect = if key_hash(k.as_bytes()) <= 32767 { "ks-a" } else { "ks-b" };
        assert_eq!(g.consumer, expect, "key {k}");
        assert_eq!(g.properties.get("origin").map(String::as_str), Some("rust"));
    }
    assert_key_order(&keyed_got);
    for r in readers {
        r.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_crate_consumer_that_leaves_unacked_gets_its_messages_redelivered() {
    let broker = ok(PulsarBroker::start().await);
    let client = rust_client(&broker).await;
    let topic = "smartcity-noise";
    let mut producer = client.producer().with_topic(topic).build().await.unwrap_or_else(|e| panic!("producer: {e}"));
    let messages = keyed(20, 4);
    for (seq, (k, p)) in messages.iter().enumerate() {
        rust_send(&mut producer, k, p, seq).await;
    }
    assert!(broker.messages(topic)[0].producer_name.starts_with("standalone-0-"), "a generated producer name");

    // The first consumer reads 5 messages, acks 2, and leaves.
    let mut first = rust_consumer(&client, topic, "twin-redeliver", SubType::Shared, "first").await;
    let mut taken = Vec::new();
    while taken.len() < 5 {
        let msg = tokio::time::timeout(DEADLINE, first.next())
            .await
            .expect("first consumer: no message")
            .expect("stream ended");
        let msg = msg.unwrap_or_else(|e| panic!("first consumer: {e}"));
        if taken.len() < 2 {
            first.ack(&msg).await.unwrap_or_else(|e| panic!("ack: {e}"));
        }
        taken.push(msg.deserialize().unwrap());
    }
    ok(wait_until("two acks", DEADLINE, || broker.acked(topic, "twin-redeliver") == 2).await);
    let held = broker.unacked_by_consumer(topic, "twin-redeliver");
    assert_eq!(held.get("first").copied(), Some(18), "the prefetched rest is unacked at 'first': {held:?}");
    first.close().await.unwrap_or_else(|e| panic!("close consumer: {e}"));
    ok(wait_until("the consumer to leave", DEADLINE, || broker.consumers(topic, "twin-redeliver") == 0).await);
    assert_eq!(broker.backlog(topic, "twin-redeliver"), 18, "the cursor survives its consumer");

    // The next consumer gets the 18 unacked messages, as redeliveries.
    let out: Received = Arc::default();
    let second = rust_consumer(&client, topic, "twin-redeliver", SubType::Shared, "second").await;
    let reader = read_all(second, "second", out.clone());
    ok(wait_until("18 redeliveries", DEADLINE, || received(&out).len() >= 18).await);
    ok(wait_until("backlog 0", DEADLINE, || broker.backlog(topic, "twin-redeliver") == 0).await);
    let got: BTreeSet<String> = received(&out).into_iter().map(|g| g.payload).collect();
    let want: BTreeSet<String> = messages.iter().skip(2).map(|(_, p)| p.clone()).collect();
    assert_eq!(got, want);
    let deliveries = broker.deliveries(topic, "twin-redeliver");
    let to_second: Vec<_> = deliveries.iter().filter(|d| d.consumer_name == "second").collect();
    assert_eq!(to_second.len(), 18);
    assert!(to_second.iter().all(|d| d.redelivery_count == 1), "{to_second:?}");
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_crate_reconnects_after_dropped_connections_and_a_broker_restart() {
    let mut broker = ok(PulsarBroker::start().await);
    let client = rust_client(&broker).await;
    let topic = "persistent://public/default/smartcity-parking";
    let out: Received = Arc::default();
    let consumer = rust_consumer(&client, topic, "twin-resume", SubType::Exclusive, "resume").await;
    let reader = read_all(consumer, "resume", out.clone());
    let mut producer =
        client.producer().with_topic(topic).with_name("parking").build().await.unwrap_or_else(|e| panic!("{e}"));
    let messages = keyed(30, 3);
    for (seq, (k, p)) in messages.iter().enumerate().take(10) {
        rust_send(&mut producer, k, p, seq).await;
    }
    ok(wait_until("10 consumed", DEADLINE, || received(&out).len() >= 10).await);

    broker.drop_connections();
    assert_eq!(broker.connections(), 0);
    assert_eq!(broker.consumers(topic, "twin-resume"), 0);
    for (seq, (k, p)) in messages.iter().enumerate().skip(10).take(10) {
        rust_send(&mut producer, k, p, seq).await;
    }
    ok(wait_until("20 consumed after reconnecting", DEADLINE, || received(&out).len() >= 20).await);

    broker.stop().await;
    assert_eq!(broker.connections(), 0);
    assert!(TcpStream::connect(("127.0.0.1", broker.port())).await.is_err(), "stopped: nothing listens");
    ok(broker.restart().await);
    for (seq, (k, p)) in messages.iter().enumerate().skip(20) {
        rust_send(&mut producer, k, p, seq).await;
    }
    ok(wait_until("30 consumed after the restart", DEADLINE, || received(&out).len() >= 30).await);
    ok(wait_until("backlog 0", DEADLINE, || broker.backlog(topic, "twin-resume") == 0).await);
    let stored: Vec<String> = broker.messages(topic).iter().map(|m| m.text()).collect();
    let want: Vec<String> = messages.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(stored, want, "nothing stored is lost, in order");
    let got: BTreeSet<String> = received(&out).into_iter().map(|g| g.payload).collect();
    assert_eq!(got, want.into_iter().collect::<BTreeSet<_>>());
    assert_key_order_first_seen(&received(&out));
    reader.abort();
}

// ---------------------------------------------------------------------------------------------
// Apache's client (pulsar-client from PyPI, C++ inside) against the broker

fn pulsar_venv() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("TWINRT_PULSAR_VENV") {
        Some(p) => root.join(p),
        None => root.join("target/pulsar-client-venv"),
    }
}

/// Runs tests/support/pulsar_client_check.py with `args` (in a blocking thread, killed after
/// the deadline) and parses its JSON output.
async fn python_check(args: &[&str]) -> serde_json::Value {
    let python = pulsar_venv().join("bin/python");
    assert!(
        python.exists(),
        "Apache's pulsar-client is not installed: run scripts/pulsar-client-venv.sh (or scripts/test.sh) (no {})",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pulsar_client_check.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script).args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let pid = child.id();
    let what = format!("pulsar_client_check.py {}", args.join(" "));
    let run = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(joined) => joined.expect("join").unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{what}: still running after 60 s (killed)");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}: {}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: output is not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

fn json_str<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_python_client_produces_batches_and_consumes_key_shared_and_exclusive() {
    let broker = ok(PulsarBroker::start().await);
    let url = broker.url();
    let topic = "persistent://public/default/smartcity-weather";
    const N: usize = 60;

    let produced = python_check(&["produce", &url, topic, &N.to_string(), "5"]).await;
    let sent = produced["sent"].as_array().expect("sent list");
    assert_eq!(sent.len(), N);

    // Stored: each message with its key, in order, batches kept as entries.
    let stored = broker.messages(topic);
    assert_eq!(stored.len(), N);
    for (i, (m, s)) in stored.iter().zip(sent).enumerate() {
        assert_eq!(m.key.as_deref(), Some(json_str(s, "key")));
        assert_eq!(m.text(), json_str(s, "payload"));
        assert_eq!(m.property("seq"), Some(i.to_string().as_str()));
        assert_eq!(m.property("origin"), Some("python"));
        assert_eq!(m.producer_name, "python-producer");
        // The id the client got in its send callback is the stored one.
        let id = &s["message_id"];
        assert_eq!((id["ledger"].as_u64(), id["entry"].as_u64()), (Some(m.ledger_id), Some(m.entry_id)), "{i}");
        assert_eq!(id["batch_index"].as_i64(), Some(m.batch_index.map(i64::from).unwrap_or(-1)), "{i}");
    }
    let entries: BTreeSet<u64> = stored.iter().map(|m| m.entry_id).collect();
    assert!(entries.len() < N, "the C++ client batched: {} entries for {N} messages", entries.len());
    assert!(stored.iter().all(|m| m.batch_index.is_some()), "batched messages carry their index");
    assert!(stored.windows(2).all(|w| (w[0].entry_id, w[0].batch_index) < (w[1].entry_id, w[1].batch_index)));

    for (sub, ty) in [("py-keyed", "KeyShared"), ("py-exclusive", "Exclusive")] {
        let got = python_check(&["consume", &url, topic, sub, ty, &N.to_string()]).await;
        let got = got["received"].as_array().expect("received list");
        let payloads: Vec<&str> = got.iter().map(|g| json_str(g, "payload")).collect();
        let want: Vec<&str> = sent.iter().map(|s| json_str(s, "payload")).collect();
        assert_eq!(payloads, want, "{sub}: one consumer gets everything in order");
        for g in got {
            assert_eq!(json_str(g, "payload").split(':').next(), Some(json_str(g, "key")));
            assert_eq!(g["properties"]["origin"], "python");
            assert_eq!(g["redelivery_count"], 0);
        }
        ok(wait_until(&format!("{sub}: backlog 0"), DEADLINE, || broker.backlog(topic, sub) == 0).await);
        assert_eq!(broker.acked(topic, sub), N);
        ok(wait_until(&format!("{sub}: consumer closed"), DEADLINE, || broker.consumers(topic, sub) == 0).await);
    }
    let refused: Vec<String> = broker.events().into_iter().filter(|e| e.contains("ERROR")).collect();
    assert!(refused.is_empty(), "the broker refused something the C++ client sent: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_crate_and_apache_client_read_each_others_messages() {
    let broker = ok(PulsarBroker::start().await);
    let url = broker.url();

    // Rust -> Python: the C++ client verifies the CRC32C the broker writes.
    let to_py = "persistent://public/default/cross-rust-to-python";
    let client = rust_client(&broker).await;
    let mut producer =
        client.producer().with_topic(to_py).with_name("rust-side").build().await.unwrap_or_else(|e| panic!("{e}"));
    let messages = keyed(6, 3);
    for (seq, (k, p)) in messages.iter().enumerate() {
        rust_send(&mut producer, k, p, seq).await;
    }
    let got = python_check(&["consume", &url, to_py, "from-rust", "Exclusive", "6"]).await;
    let got = got["received"].as_array().expect("received list");
    for (g, (k, p)) in got.iter().zip(&messages) {
        assert_eq!((json_str(g, "key"), json_str(g, "payload")), (k.as_str(), p.as_str()));
        assert_eq!(g["properties"]["origin"], "rust");
    }
    assert_eq!(got.len(), 6);
    ok(wait_until("from-rust: backlog 0", DEADLINE, || broker.backlog(to_py, "from-rust") == 0).await);

    // Python (batched) -> Rust: the crate verifies the checksum and splits the batches.
    let to_rust = "cross-python-to-rust";
    let out: Received = Arc::default();
    let consumer = rust_consumer(&client, to_rust, "from-python", SubType::Exclusive, "rust-reader").await;
    let reader = read_all(consumer, "rust-reader", out.clone());
    let produced = python_check(&["produce", &url, to_rust, "12", "4"]).await;
    ok(wait_until("12 messages from Python", DEADLINE, || received(&out).len() >= 12).await);
    let got = received(&out);
    let sent = produced["sent"].as_array().expect("sent list");
    assert_eq!(got.len(), 12);
    for (g, s) in got.iter().zip(sent) {
        assert_eq!((g.key.as_deref(), g.payload.as_str()), (Some(json_str(s, "key")), json_str(s, "payload")));
        assert_eq!(g.properties.get("origin").map(String::as_str), Some("python"));
    }
    ok(wait_until("from-python: backlog 0", DEADLINE, || broker.backlog(to_rust, "from-python") == 0).await);
    // A message injected by the test (no client) reaches the Python client too.
    broker.publish(to_py, Some("injected"), b"not json \xff");
    let got = python_check(&["consume", &url, to_py, "from-rust", "Exclusive", "1"]).await;
    assert_eq!(got["received"][0]["key"], "injected");
    assert_eq!(got["received"][0]["payload"], "not json \u{fffd}");
    reader.abort();
}

// ---------------------------------------------------------------------------------------------
// A raw TCP client: refused frames, unsupported commands, keepalive

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(broker: &PulsarBroker) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", broker.port())).await.unwrap_or_else(|e| panic!("connect: {e}"));
        Raw { stream, buf: Vec::new() }
    }

    /// Opens a connection and does the CONNECT / CONNECTED exchange.
    async fn connected(broker: &PulsarBroker) -> Raw {
        let mut raw = Raw::open(broker).await;
        let mut c = base(Type::Connect);
        c.connect = Some(proto::CommandConnect {
            client_version: "raw-test".into(),
            protocol_version: Some(15),
            ..Default::default()
        });
        raw.send(&encode_command(&c)).await;
        let f = raw.recv().await.expect("CONNECTED");
        let connected = f.command.connected.clone().unwrap_or_else(|| panic!("not CONNECTED: {:?}", f.command));
        assert_eq!(connected.protocol_version, Some(15), "the lower of the two versions");
        assert_eq!(connected.max_message_size, Some(5 * 1024 * 1024));
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// The next frame, `None` when the broker closed the connection.
    async fn recv(&mut self) -> Option<frame::Frame> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some((f, used)) = decode_frame(&self.buf).unwrap_or_else(|e| panic!("broker sent a bad frame: {e}"))
            {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame that is not a PING from the broker.
    async fn answer(&mut self) -> frame::Frame {
        loop {
            let f = self.recv().await.expect("connection closed");
            if f.command.r#type != Type::Ping as i32 {
                return f;
            }
        }
    }
}

fn send_frame(producer_id: u64, sequence_id: u64, payload: &[u8]) -> Vec<u8> {
    let meta = MessageMetadata {
        producer_name: "raw".into(),
        sequence_id,
        publish_time: 1_700_000_000_000,
        partition_key: Some("raw-key".into()),
        ..Default::default()
    };
    let mut c = base(Type::Send);
    c.send = Some(proto::CommandSend { producer_id, sequence_id, num_messages: Some(1), ..Default::default() });
    encode_payload_command(&c, &meta.encode_to_vec(), payload)
}

fn error_of(f: &frame::Frame) -> (u64, ServerError, String) {
    let e = f.command.error.clone().unwrap_or_else(|| panic!("not an ERROR: {:?}", f.command));
    (e.request_id, ServerError::try_from(e.error).expect("a ServerError"), e.message)
}

#[tokio::test]
async fn raw_client_bad_checksum_is_refused_and_unsupported_commands_get_an_error() {
    let broker = ok(PulsarBroker::start().await);
    let topic = "raw-topic";
    let mut raw = Raw::connected(&broker).await;

    let mut lookup = base(Type::Lookup);
    lookup.lookup_topic = Some(proto::CommandLookupTopic { topic: topic.into(), request_id: 1, ..Default::default() });
    raw.send(&encode_command(&lookup)).await;
    let r = raw.answer().await.command.lookup_topic_response.expect("LOOKUP_RESPONSE");
    assert_eq!(
        (r.request_id, r.broker_service_url.as_deref(), r.authoritative),
        (1, Some(broker.url().as_str()), Some(true))
    );
    let mut pm = base(Type::PartitionedMetadata);
    pm.partition_metadata =
        Some(proto::CommandPartitionedTopicMetadata { topic: topic.into(), request_id: 2, ..Default::default() });
    raw.send(&encode_command(&pm)).await;
    assert_eq!(raw.answer().await.command.partition_metadata_response.expect("response").partitions, Some(0));

    let mut p = base(Type::Producer);
    p.producer =
        Some(proto::CommandProducer { topic: topic.into(), producer_id: 7, request_id: 3, ..Default::default() });
    raw.send(&encode_command(&p)).await;
    let ps = raw.answer().await.command.producer_success.expect("PRODUCER_SUCCESS");
    assert_eq!(ps.request_id, 3);
    assert!(ps.producer_name.starts_with("standalone-0-"), "{}", ps.producer_name);

    // Wrong checksum: SEND_ERROR ChecksumError, nothing stored, the connection stays.
    let mut bad = send_frame(7, 0, b"corrupted");
    let last = bad.len() - 1;
    bad[last] ^= 0x20;
    raw.send(&bad).await;
    let e = raw.answer().await.command.send_error.expect("SEND_ERROR");
    assert_eq!((e.producer_id, e.sequence_id, e.error), (7, 0, ServerError::ChecksumError as i32));
    assert!(broker.messages(topic).is_empty());
    // The right checksum: stored, receipt with the message id.
    raw.send(&send_frame(7, 1, b"intact")).await;
    let r = raw.answer().await.command.send_receipt.expect("SEND_RECEIPT");
    let stored = broker.messages(topic);
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].text(), stored[0].key.as_deref()), ("intact".to_string(), Some("raw-key")));
    let id = r.message_id.expect("message id");
    assert_eq!((r.sequence_id, id.ledger_id, id.entry_id), (1, stored[0].ledger_id, 0));

    // Unsupported and unknown commands: an ERROR naming them.
    let mut seek = base(Type::Seek);
    seek.seek = Some(proto::CommandSeek { consumer_id: 1, request_id: 9, ..Default::default() });
    raw.send(&encode_command(&seek)).await;
    let (rid, code, msg) = error_of(&raw.answer().await);
    assert_eq!((rid, code), (9, ServerError::NotAllowedError));
    assert!(msg.contains("SEEK"), "{msg}");
    let unknown = proto::BaseCommand { r#type: 99, ..Default::default() };
    raw.send(&encode_command(&unknown)).await;
    let (_, _, msg) = error_of(&raw.answer().await);
    assert!(msg.contains("type 99"), "{msg}");
    // Still alive: PING -> PONG.
    raw.send(&encode_command(&ping())).await;
    assert_eq!(raw.answer().await.command.r#type, Type::Pong as i32);

    // A frame that cannot be parsed: an ERROR, then the connection closes; the broker lives.
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&200u32.to_be_bytes());
    garbage.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    raw.send(&garbage).await;
    let (_, _, msg) = error_of(&raw.answer().await);
    assert!(msg.contains("commandSize"), "{msg}");
    assert!(raw.recv().await.is_none(), "closed after a bad frame");
    ok(wait_until("the producer to go with its connection", DEADLINE, || broker.producers(topic) == 0).await);

    // A command before CONNECT: an ERROR and the connection closes.
    let mut early = Raw::open(&broker).await;
    early.send(&encode_command(&lookup)).await;
    let (rid, _, msg) = error_of(&early.answer().await);
    assert_eq!(rid, 1);
    assert!(msg.contains("before CONNECT"), "{msg}");
    assert!(early.recv().await.is_none());

    // The broker still serves.
    let mut again = Raw::connected(&broker).await;
    again.send(&encode_command(&ping())).await;
    assert_eq!(again.answer().await.command.r#type, Type::Pong as i32);
    let events = broker.events();
    assert!(events.iter().any(|e| e.contains("ChecksumError")), "{events:?}");
}

#[tokio::test]
async fn broker_pings_and_closes_silent_connections() {
    let interval = Duration::from_millis(200);
    let broker = ok(PulsarBroker::start_with(PulsarOptions { ping_interval: interval }).await);
    // A client that answers the broker's PINGs stays connected.
    let mut live = Raw::connected(&broker).await;
    let mut silent = Raw::connected(&broker).await;
    let start = std::time::Instant::now();
    let mut pings = 0;
    while start.elapsed() < interval * 5 {
        let f = live.recv().await.expect("the answering client stays connected");
        assert_eq!(f.command.r#type, Type::Ping as i32);
        pings += 1;
        let mut pong = base(Type::Pong);
        pong.pong = Some(proto::CommandPong {});
        live.send(&encode_command(&pong)).await;
    }
    assert!(pings >= 3, "{pings} pings");
    // The silent one was pinged, then closed.
    let mut silent_pings = 0;
    while let Some(f) = silent.recv().await {
        assert_eq!(f.command.r#type, Type::Ping as i32);
        silent_pings += 1;
    }
    assert!(silent_pings >= 1);
    assert!(broker.events().iter().any(|e| e.contains("keepalive timeout")));
}
