//! Self test of tests/support (throwaway).

mod support;

use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(5);

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn free_port_is_bindable() {
    let p = free_port();
    assert_ne!(p, 0);
    std::net::TcpListener::bind(("127.0.0.1", p)).expect("free port should be bindable");
}

#[tokio::test]
async fn wait_until_reports_what_and_deadline() {
    let err = wait_until("the impossible", Duration::from_millis(60), || false).await.unwrap_err();
    assert!(err.contains("the impossible") && err.contains("60ms"), "{err}");
    let mut n = 0;
    ok(wait_until("three polls", T, || {
        n += 1;
        n >= 3
    })
    .await);
    ok(wait_until_async("async predicate", T, || async { true }).await);
}

#[tokio::test]
async fn missing_binary_message() {
    let opts = MosquittoOptions { binary: Some("/nonexistent/mosquitto".into()), ..MosquittoOptions::plain() };
    let err = Mosquitto::start_with(opts).await.err().expect("must fail");
    assert_eq!(
        err,
        "mosquitto not found: install it with 'apt-get install -y mosquitto' (or run the README's test command: scripts/test.sh)"
    );
}

#[tokio::test]
async fn plain_roundtrip_kill_restart() {
    let mut broker = ok(Mosquitto::start_plain().await);
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    assert!(broker.ca_file().is_none());
    let dir = broker.dir().to_path_buf();

    let sub = ok(Subscriber::connect(&broker.endpoint(), "city/sensors/#").await);
    let publ = ok(Publisher::connect(&broker.endpoint()).await);
    publ.publish("elsewhere/x", "ignored", rumqttc::QoS::AtLeastOnce).await.unwrap();
    for i in 0..5 {
        let payload = format!(r#"{{"n":{i}}}"#);
        ok(publ.publish(&format!("city/sensors/temp/{i}"), payload, rumqttc::QoS::AtLeastOnce).await);
    }
    ok(publ.wait_all_acked(T).await);
    let msgs = ok(sub.wait_for_count(5, T).await);
    assert_eq!(msgs.len(), 5, "only the filter's topics: {msgs:?}");
    assert_eq!(msgs[4].topic, "city/sensors/temp/4");
    assert_eq!(ok(msgs[2].json())["n"], 2);

    broker.kill();
    assert!(!broker.is_running());
    ok(wait_until("subscriber sees the broker die", T, || !sub.is_connected()).await);
    ok(wait_until("publisher sees the broker die", T, || !publ.is_connected()).await);

    ok(broker.restart().await);
    assert_eq!(broker.starts(), 2);
    // Clean sessions: the subscriber re-subscribes on its new CONNACK.
    ok(wait_until("subscriber re-subscribed", T, || sub.subacks() >= 2).await);
    ok(wait_until("publisher reconnected", T, || publ.state().connacks >= 2).await);
    ok(publ.publish_acked("city/sensors/after-restart", "again", T).await);
    let m = ok(sub.wait_for(|m| m.topic == "city/sensors/after-restart", T).await);
    assert_eq!(m.payload_str(), "again");
    assert!(broker.log().contains("city/sensors/after-restart"), "log_type all shows publishes");

    drop(broker);
    assert!(!dir.exists(), "temp dir removed on drop");
}

#[tokio::test]
async fn tls_roundtrip_and_wrong_ca_refused() {
    let broker = ok(Mosquitto::start_tls().await);
    assert_eq!(broker.url(), format!("mqtts://127.0.0.1:{}", broker.port()));
    let ca = broker.ca_file().expect("TLS broker has a CA file");
    assert!(ca.is_file() && broker.dir().join("server.crt").is_file() && broker.dir().join("server.key").is_file());

    let sub = ok(Subscriber::connect(&broker.endpoint(), "city/sensors/#").await);
    // Same broker through the DNS name of the certificate.
    let publ = ok(Publisher::connect(&broker.endpoint().with_host("localhost")).await);
    for i in 0..3 {
        ok(publ.publish(&format!("city/sensors/tls/{i}"), vec![i as u8], rumqttc::QoS::AtLeastOnce).await);
    }
    ok(publ.wait_all_acked(T).await);
    let msgs = ok(sub.wait_for_count(3, T).await);
    assert_eq!(msgs[0].payload, vec![0u8]);

    // A client trusting another CA is refused.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.crt");
    ok(write_unrelated_ca(&other_ca));
    let bad = broker.endpoint().with_ca(Some(other_ca));
    let err = probe_connect(&bad, Duration::from_secs(3)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.to_lowercase().contains("certificate"), "{err}");
    let err = Subscriber::connect(&bad, "city/#").await.err().expect("wrong CA must fail");
    assert!(err.contains("could not connect"), "{err}");
    eprintln!("wrong CA error: {err}");

    // A plain client on the TLS port gets no CONNACK.
    let plain = broker.endpoint().with_ca(None);
    assert!(probe_connect(&plain, Duration::from_secs(2)).await.is_err());
}

#[tokio::test]
async fn persistent_session_survives_graceful_restart() {
    let mut broker = ok(Mosquitto::start_with(MosquittoOptions::plain().with_persistence(None)).await);
    let id = unique_client_id("durable");
    let sub =
        ok(Subscriber::connect_with(&broker.endpoint(), "city/sensors/#", SubscriberOptions::persistent(&id)).await);
    drop(sub); // offline; the broker queues QoS 1 messages for the session

    let publ = ok(Publisher::connect(&broker.endpoint()).await);
    for i in 0..3 {
        ok(publ.publish(&format!("city/sensors/q/{i}"), "queued", rumqttc::QoS::AtLeastOnce).await);
    }
    ok(publ.wait_all_acked(T).await);

    ok(broker.terminate().await); // graceful: writes the persistence DB
    assert!(broker.dir().join("data/mosquitto.db").is_file(), "{}", broker.log_tail(2000));
    ok(broker.restart().await);

    let sub =
        ok(Subscriber::connect_with(&broker.endpoint(), "city/sensors/#", SubscriberOptions::persistent(&id)).await);
    assert!(sub.state().session_present, "session restored from persistence");
    ok(sub.wait_for_count(3, T).await);
}
