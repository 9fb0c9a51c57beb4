//! The `mqtt` scenario's counting subscriber: one MQTT 3.1.1 connection subscribed to `#`,
//! on a thread of its own, that counts the PUBLISH packets it receives.
//!
//! The counter is the measuring instrument, and on two cores what it costs per message is
//! taken from the broker and the contender it measures. So it reads the socket into one
//! buffer and walks the packets' fixed headers without decoding topics or payloads, and
//! after a read that found the socket nearly empty it pauses for a millisecond instead of
//! blocking in `read`: a subscriber waiting in `read` has the broker wake it for every
//! message it writes, and that wake-up is paid from the broker's CPU, the bound of every
//! contender. (The rumqttc event loop it replaces took 7-10 µs of CPU per message and
//! raised Mosquitto's own cost per message by a fifth to a third, more for the bare
//! clients than for the twins: BENCHMARKS.md, 2026-12-04.) At QoS 1 it acknowledges every
//! publish, the PUBACKs of one read written together. CONNECT and SUBSCRIBE are encoded by
//! rumqttc's codec.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, Subscribe};
use rumqttc::mqttbytes::{check, Error, QoS};

/// Bytes read at once; a packet larger than this (none in the scenario) grows the buffer
/// up to [`MAX_PACKET`].
const READ_BUFFER: usize = 256 * 1024;
const MAX_PACKET: usize = 1 << 20;
/// The pause after a read that found the socket nearly empty (a few thousand messages at
/// most gather in it meanwhile, well within a loopback socket's buffer).
const POLL_PAUSE: Duration = Duration::from_millis(1);

/// What [`scan`] found in the whole packets at the start of a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Bytes of whole packets (the rest is the start of a packet not yet read whole).
    pub consumed: usize,
    pub publishes: u64,
    pub connacks: u32,
    pub subacks: u32,
    /// Bytes a packet needs in all, when the buffer ends inside its fixed header or body.
    pub needs: Option<usize>,
}

/// Walk the whole packets at the start of `buf`: count PUBLISHes, append a PUBACK to
/// `acks` for each one at QoS 1, check CONNACK and SUBACK return codes.
pub(crate) fn scan(buf: &[u8], acks: &mut Vec<u8>) -> Result<Scanned, String> {
    let mut s = Scanned::default();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let fixed = match check(rest.iter(), MAX_PACKET) {
            Ok(fixed) => fixed,
            Err(Error::InsufficientBytes(missing)) => {
                s.needs = Some(rest.len() + missing);
                break;
            }
            Err(e) => return Err(format!("byte {at}: {e}")),
        };
        let total = fixed.frame_length();
        // The type byte, then the remaining length's bytes (`check` read them: at most 4).
        let header = 2 + rest[1..].iter().take_while(|b| **b & 0x80 != 0).count();
        let body = &rest[header..total];
        let len = body.len();
        match rest[0] >> 4 {
            3 => {
                s.publishes += 1;
                match (rest[0] >> 1) & 3 {
                    0 => {}
                    1 => {
                        let topic = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
                        let pkid = topic.and_then(|t| body.get(2 + t..4 + t));
                        let Some(pkid) = pkid else {
                            return Err(format!("byte {at}: QoS 1 PUBLISH of {len} bytes has no packet id"));
                        };
                        acks.extend_from_slice(&[0x40, 0x02, pkid[0], pkid[1]]);
                    }
                    q => return Err(format!("byte {at}: PUBLISH at QoS {q}, not subscribed at it")),
                }
            }
            2 => match body.get(1) {
                Some(0) => s.connacks += 1,
                code => return Err(format!("CONNACK refused (return code {code:?})")),
            },
            9 => match body.get(2) {
                Some(0 | 1) => s.subacks += 1,
                code => return Err(format!("SUBACK refused (return code {code:?})")),
            },
            // PINGRESP, or anything else a broker may send a subscriber: not counted.
            _ => {}
        }
        at += total;
    }
    s.consumed = at;
    Ok(s)
}

/// A subscriber to `#` on its own thread, counting messages.
pub struct Counter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Connect, subscribe, and count until `stop` (checked at least every 200 ms).
fn subscribe_and_count(
    port: u16,
    qos: QoS,
    count: &AtomicU64,
    subscribed: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let mut connect = Connect::new(format!("bench-counter-{port}-{}", qos as u8));
    // No keep-alive: the broker never expects a ping from this connection (MQTT 3.1.1 3.1.2.10).
    connect.keep_alive = 0;
    let mut subscribe = Subscribe::new("#", qos);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    for p in [Packet::Connect(connect), Packet::Subscribe(subscribe)] {
        p.write(&mut out, MAX_PACKET).map_err(|e| format!("encoding {p:?}: {e}"))?;
    }
    stream.write_all(&out).map_err(|e| format!("sending CONNECT and SUBSCRIBE: {e}"))?;

    let mut buf = vec![0u8; READ_BUFFER];
    let mut filled = 0;
    let mut acks = Vec::with_capacity(READ_BUFFER / 8);
    let mut connected = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err("the broker closed the connection".into()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) => return Err(format!("read: {e}")),
        };
        filled += n;
        let s = scan(&buf[..filled], &mut acks)?;
        if s.connacks > 0 {
            connected = true;
        }
        if s.subacks > 0 {
            if !connected {
                return Err("SUBACK before CONNACK".into());
            }
            subscribed.store(true, Ordering::Relaxed);
        }
        if s.publishes > 0 {
            count.fetch_add(s.publishes, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            stream.write_all(&acks).map_err(|e| format!("sending PUBACKs: {e}"))?;
            acks.clear();
        }
        buf.copy_within(s.consumed..filled, 0);
        filled -= s.consumed;
        if let Some(need) = s.needs.filter(|&need| need > buf.len()) {
            buf.resize(need, 0);
        }
        // Let a short read's successors gather in the socket: a subscriber blocked in
        // `read` makes the broker wake it for every message it writes, and on two cores
        // that wake-up is paid from the broker's CPU, the bound of every contender.
        if n < buf.len() / 4 {
            std::thread::sleep(POLL_PAUSE);
        }
    }
    Ok(())
}

impl Counter {
    pub async fn start(port: u16, qos: QoS) -> Result<Counter, String> {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (c, s, sub, err) = (count.clone(), stop.clone(), subscribed.clone(), error.clone());
        let thread = std::thread::Builder::new()
            .name("bench-counter".into())
            .spawn(move || {
                if let Err(e) = subscribe_and_count(port, qos, &c, &sub, &s) {
                    if let Ok(mut slot) = err.lock() {
                        *slot = Some(format!("counting subscriber: {e}"));
                    }
                }
            })
            .map_err(|e| format!("counting subscriber's thread: {e}"))?;
        let counter = Counter { count, stop, error, thread: Some(thread) };
        let waited = super::wait_for("the counting subscriber's SUBACK", Duration::from_secs(10), || {
            subscribed.load(Ordering::Relaxed) || counter.error().is_some()
        })
        .await;
        match (counter.error(), waited) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(counter),
        }
    }

    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Why the subscriber stopped counting, if it did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Wait until `n` more than `base` arrived; returns when they had, or the count
    /// reached when no message came for `idle`.
    async fn wait_for(&self, base: u64, n: u64, idle: Duration) -> (u64, Instant) {
        let mut last = self.get();
        let mut last_change = Instant::now();
        loop {
            let c = self.get();
            if c >= base + n {
                return (c - base, Instant::now());
            }
            if c != last {
                last = c;
                last_change = Instant::now();
            } else if last_change.elapsed() > idle {
                return (c - base, last_change);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The rate of `n` messages after `warm` ones: from when `warm` had arrived to when
    /// `warm + n` had (or no more came for 10 s); returns (messages counted, seconds).
    pub async fn measure(&self, base: u64, warm: u64, n: u64, first: Duration) -> (u64, f64) {
        let (w, t0) = self.wait_for(base, warm, first).await;
        let (total, t1) = self.wait_for(base, warm + n, Duration::from_secs(10)).await;
        let got = total.saturating_sub(w);
        (got, t1.duration_since(t0).as_secs_f64().max(1e-6))
    }

    /// Wait until nothing arrived for `quiet`; returns the count.
    pub async fn settle(&self, quiet: Duration) -> u64 {
        let mut last = self.get();
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let c = self.get();
            if c != last {
                last = c;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return c;
            }
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Publish, SubAck, SubscribeReasonCode};

    fn encode(packets: Vec<Packet>) -> Vec<u8> {
        let mut out = BytesMut::new();
        for p in packets {
            p.write(&mut out, MAX_PACKET).expect("encode");
        }
        out.to_vec()
    }

    /// Publishes of several sizes (remaining lengths of one, two and three bytes), at both
    /// QoS levels, between the packets a broker sends a subscriber first and a PINGRESP.
    fn stream() -> (Vec<u8>, u64, Vec<u16>) {
        let mut packets = vec![
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
            Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])),
        ];
        let mut pkids = Vec::new();
        for i in 0..300u16 {
            let size = [10, 200, 20_000][i as usize % 3];
            let mut p = Publish::new(format!("city/sensors/light/b0-{i:05}"), QoS::AtMostOnce, vec![b'x'; size]);
            if i % 2 == 1 {
                p.qos = QoS::AtLeastOnce;
                p.pkid = i + 1;
                pkids.push(i + 1);
            }
            packets.push(Packet::Publish(p));
            if i == 150 {
                packets.push(Packet::PingResp);
            }
        }
        (encode(packets), 300, pkids)
    }

    fn acked(acks: &[u8]) -> Vec<u16> {
        acks.chunks(4)
            .map(|a| {
                assert_eq!(&a[..2], &[0x40, 0x02], "a PUBACK's fixed header");
                u16::from_be_bytes([a[2], a[3]])
            })
            .collect()
    }

    #[test]
    fn counts_every_publish_and_acks_qos1_ones_whatever_the_reads_cut() {
        let (bytes, publishes, pkids) = stream();
        // Reads of 1 byte, of sizes cutting headers and bodies, and all at once.
        for chunk in [1usize, 2, 3, 7, 199, 4096, bytes.len()] {
            let (mut buf, mut acks) = (Vec::new(), Vec::new());
            let (mut got, mut connacks, mut subacks) = (0, 0, 0);
            for part in bytes.chunks(chunk) {
                buf.extend_from_slice(part);
                let s = scan(&buf, &mut acks).expect("scan");
                if let Some(need) = s.needs {
                    assert!(need > buf.len() - s.consumed, "chunk {chunk}: needs {need}");
                }
                got += s.publishes;
                connacks += s.connacks;
                subacks += s.subacks;
                buf.drain(..s.consumed);
            }
            assert!(buf.is_empty(), "chunk {chunk}: {} bytes left", buf.len());
            assert_eq!((got, connacks, subacks), (publishes, 1, 1), "chunk {chunk}");
            assert_eq!(acked(&acks), pkids, "chunk {chunk}");
        }
    }

    #[test]
    fn refusals_and_malformed_packets_are_errors_that_say_what() {
        let refused = encode(vec![Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false))]);
        assert!(scan(&refused, &mut Vec::new()).unwrap_err().contains("CONNACK refused"));
        let sub = encode(vec![Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Failure]))]);
        assert!(scan(&sub, &mut Vec::new()).unwrap_err().contains("SUBACK refused"));
        let too_long = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(scan(&too_long, &mut Vec::new()).unwrap_err().contains("remaining length"));
        // A QoS 1 PUBLISH whose topic runs past its end: no packet id to acknowledge.
        let no_pkid = [0x32, 0x04, 0x00, 0x09, b'a', b'b'];
        assert!(scan(&no_pkid, &mut Vec::new()).unwrap_err().contains("no packet id"));
        let qos2 = encode(vec![Packet::Publish({
            let mut p = Publish::new("t", QoS::ExactlyOnce, vec![1]);
            p.pkid = 7;
            p
        })]);
        assert!(scan(&qos2, &mut Vec::new()).unwrap_err().contains("QoS 2"));
    }
}
