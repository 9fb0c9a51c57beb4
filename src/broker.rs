//! The embedded MQTT broker (rumqttd) of the default configuration, so that `twinrt` with
//! no flags has somewhere to publish and `mosquitto_sub` has something to read.
//!
//! rumqttd runs its router and listener on threads of its own and has no shutdown: the
//! broker lives as long as the process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};

/// Is an MQTT broker answering on `at`? A CONNECT answered by a successful CONNACK, and
/// the connection closed. Not a bare TCP connection: rumqttd logs an ERROR ("Error while
/// handling MQTT connect packet") for each connection that closes before its CONNECT. And
/// no DISCONNECT either: rumqttd logs one for a client that sends DISCONNECT and then
/// closes (its router sees the connection go twice), none for a client that just closes.
fn answers_mqtt(at: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&at, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    Packet::Connect(Connect::new("twinrt-readiness-probe"))
        .write(&mut out, 1024)
        .map_err(|e| format!("encoding CONNECT: {e}"))?;
    stream.write_all(&out).map_err(|e| format!("sending CONNECT: {e}"))?;
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 64];
    loop {
        match Packet::read(&mut input, 1024) {
            Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => return Ok(()),
            Ok(Packet::ConnAck(ack)) => return Err(format!("CONNECT refused: {:?}", ack.code)),
            Ok(other) => return Err(format!("expected CONNACK, got {other:?}")),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("reading CONNACK: {e}")),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed before CONNACK".into()),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading CONNACK: {e}")),
        }
    }
}

/// Start rumqttd listening on `listen` (MQTT 3.1.1) and wait until it answers a CONNECT.
pub fn start_embedded(listen: SocketAddr) -> Result<(), String> {
    // rumqttd only logs a bind failure from its own thread: check the port first.
    TcpListener::bind(listen).map_err(|e| format!("embedded broker cannot listen on {listen}: {e}"))?;
    let config_text = format!(
        r#"
id = 0
[router]
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "twinrt-embedded"
listen = "{listen}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 500
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&config_text).map_err(|e| format!("embedded broker configuration: {e}"))?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| format!("cannot start the embedded broker thread: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = answers_mqtt(listen);
        if answer.is_ok() {
            tracing::info!(%listen, "embedded MQTT broker (rumqttd) listening");
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = answer.err().unwrap_or_default();
            return Err(format!("embedded broker did not answer an MQTT CONNECT on {listen} within 10s: {why}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
