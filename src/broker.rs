//! The embedded MQTT broker (rumqttd) of the default configuration, so that `twinrt` with
//! no flags has somewhere to publish and `mosquitto_sub` has something to read.
//!
//! rumqttd runs its router and listener on threads of its own and has no shutdown: the
//! broker lives as long as the process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Start rumqttd listening on `listen` (MQTT 3.1.1) and wait until it accepts connections.
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
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            tracing::info!(%listen, "embedded MQTT broker (rumqttd) listening");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("embedded broker did not accept connections on {listen} within 10s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
