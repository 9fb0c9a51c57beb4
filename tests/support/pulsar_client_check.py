"""Apache's Pulsar client (pulsar-client, C++ inside) against the twinrt test broker.

Run by tests/pulsar_broker.rs with the venv of scripts/pulsar-client-venv.sh:

  pulsar_client_check.py produce URL TOPIC COUNT KEYS [--no-batch]
      sends COUNT messages, key sensor-{i % KEYS}, payload "{key}:{i}", properties
      seq={i} and origin=python; batched (the C++ client's default) unless --no-batch.
  pulsar_client_check.py consume URL TOPIC SUBSCRIPTION TYPE COUNT
      subscribes (TYPE: Exclusive, Shared, Failover, KeyShared; from the earliest message),
      receives COUNT messages, acks each.

Prints one JSON document on stdout; exits 1 (with the reason on stderr) on failure.
"""

import json
import sys

import pulsar

TIMEOUT_MS = 15000


def client(url):
    kwargs = {"operation_timeout_seconds": 15, "connection_timeout_ms": 10000}
    try:
        kwargs["logger"] = pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)
    except AttributeError:
        pass
    return pulsar.Client(url, **kwargs)


def msg_id(mid):
    return {"ledger": mid.ledger_id(), "entry": mid.entry_id(), "batch_index": mid.batch_index()}


def produce(url, topic, count, keys, batch):
    c = client(url)
    producer = c.create_producer(
        topic,
        producer_name="python-producer",
        batching_enabled=batch,
        batching_max_messages=20,
        batching_max_publish_delay_ms=20,
    )
    results = [None] * count

    def callback(i):
        def done(res, mid):
            ok = res == pulsar.Result.Ok
            results[i] = {"ok": ok, "result": str(res), "message_id": msg_id(mid) if ok else None}

        return done

    sent = []
    for i in range(count):
        key = "sensor-%d" % (i % keys)
        payload = "%s:%d" % (key, i)
        props = {"seq": str(i), "origin": "python"}
        producer.send_async(payload.encode(), callback(i), properties=props, partition_key=key)
        sent.append({"key": key, "payload": payload, "properties": props})
    producer.flush()
    producer.close()
    c.close()
    for i, r in enumerate(results):
        if r is None or not r["ok"]:
            sys.stderr.write("send %d failed: %r\n" % (i, r))
            sys.exit(1)
        sent[i]["message_id"] = r["message_id"]
    print(json.dumps({"producer": "python-producer", "sent": sent}))


def consume(url, topic, subscription, sub_type, count):
    c = client(url)
    consumer = c.subscribe(
        topic,
        subscription,
        consumer_type=getattr(pulsar.ConsumerType, sub_type),
        consumer_name="python-%s" % sub_type.lower(),
        initial_position=pulsar.InitialPosition.Earliest,
    )
    received = []
    while len(received) < count:
        try:
            m = consumer.receive(timeout_millis=TIMEOUT_MS)
        except pulsar.Timeout:
            sys.stderr.write("timeout after %d of %d messages: %s\n" % (len(received), count, json.dumps(received)))
            sys.exit(1)
        received.append(
            {
                "key": m.partition_key() or None,
                "payload": m.data().decode("utf-8", "replace"),
                "properties": m.properties(),
                "redelivery_count": m.redelivery_count(),
                "publish_timestamp": m.publish_timestamp(),
                "message_id": msg_id(m.message_id()),
            }
        )
        consumer.acknowledge(m)
    consumer.close()
    c.close()
    print(json.dumps({"received": received}))


def main(argv):
    if len(argv) >= 5 and argv[1] == "produce":
        batch = "--no-batch" not in argv
        produce(argv[2], argv[3], int(argv[4]), int(argv[5]), batch)
    elif len(argv) == 7 and argv[1] == "consume":
        consume(argv[2], argv[3], argv[4], argv[5], int(argv[6]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
