//! Reading a Pandaproxy fetch answer into [`WireRecord`]s, fastest path first:
//!
//! 1. [`exact`]: the layout proxies send, read without a JSON parser: a bare array of flat
//!    objects whose members are `topic`, `key`, `value` (strings, `key` and `value` may be
//!    `null`), `partition` and `offset` (integers), in any order, with strings that hold no
//!    escape, read with `twins::scan::Scan` (the MQTT decoder's cursor; each string's end
//!    found with `memchr`: a record's value is ~700 bytes of base64, most of an answer).
//! 2. [`typed`]: serde into the same records (also the API document's `{"records": [...]}`).
//!
//! The exact reader gives up (`None`) on anything else, so that the next path decides: it
//! never accepts an answer the typed path would refuse, nor reads one differently (a
//! property test checks both). What neither path reads is read as a JSON tree, record by
//! record, by the caller.

use std::borrow::Cow;

use twins::scan::Scan;

/// A record as the fast paths read it (other members, like `key`, are skipped).
#[derive(Debug, PartialEq, serde::Deserialize)]
pub struct WireRecord<'a> {
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(default)]
    pub partition: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
    #[serde(borrow, default)]
    pub value: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct WireRecords<'a> {
    #[serde(borrow)]
    records: Vec<WireRecord<'a>>,
}

/// The records of a fetch answer by the fastest path that reads it, or `None`.
pub fn records(body: &[u8]) -> Option<Vec<WireRecord<'_>>> {
    exact(body).or_else(|| typed(body))
}

/// serde into typed records: a bare array, or `{"records": [...]}`.
pub fn typed(body: &[u8]) -> Option<Vec<WireRecord<'_>>> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).ok(),
        _ => serde_json::from_slice::<WireRecords<'_>>(body).ok().map(|w| w.records),
    }
}

/// The proxies' own layout, without a JSON parser; `None` for anything else.
pub fn exact(body: &[u8]) -> Option<Vec<WireRecord<'_>>> {
    let mut r = Scan::new(body);
    r.ws();
    r.lit(b"[")?;
    r.ws();
    // About 750 bytes a record in twinrt's own topics.
    let mut out = Vec::with_capacity(body.len() / 700 + 1);
    if r.peek()? == b']' {
        r.bump();
    } else {
        loop {
            out.push(record(&mut r)?);
            r.ws();
            match r.bump()? {
                b',' => r.ws(),
                b']' => break,
                _ => return None,
            }
        }
    }
    r.ws();
    r.rest().is_empty().then_some(out)
}

fn record<'a>(r: &mut Scan<'a>) -> Option<WireRecord<'a>> {
    r.lit(b"{")?;
    r.ws();
    let mut rec = WireRecord { topic: None, partition: None, offset: None, value: None };
    if r.peek()? == b'}' {
        r.bump();
        return Some(rec);
    }
    // Members seen: a repeated one is left to serde (which refuses it).
    let mut seen = 0u8;
    loop {
        let name = r.string()?;
        r.ws();
        r.lit(b":")?;
        r.ws();
        let bit = match name {
            "topic" => {
                rec.topic = Some(Cow::Borrowed(r.string()?));
                1
            }
            "key" => {
                string_or_null(r)?;
                2
            }
            "value" => {
                rec.value = string_or_null(r)?.map(Cow::Borrowed);
                4
            }
            "partition" => {
                rec.partition = Some(r.int()?);
                8
            }
            "offset" => {
                rec.offset = Some(r.int()?);
                16
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        r.ws();
        match r.bump()? {
            b',' => r.ws(),
            b'}' => return Some(rec),
            _ => return None,
        }
    }
}

fn string_or_null<'a>(r: &mut Scan<'a>) -> Option<Option<&'a str>> {
    if r.lit(b"null").is_some() {
        return Some(None);
    }
    r.string().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ONE: &str = r#"[{"topic":"noise","key":"bi0w","value":"eyJhIjoxfQ==","partition":0,"offset":7}]"#;

    #[test]
    fn the_proxies_layout_is_read_exactly() {
        let r = exact(ONE.as_bytes()).expect("exact layout");
        assert_eq!(r, typed(ONE.as_bytes()).expect("typed"));
        assert_eq!(r[0].topic.as_deref(), Some("noise"));
        assert_eq!((r[0].partition, r[0].offset), (Some(0), Some(7)));
        assert_eq!(r[0].value.as_deref(), Some("eyJhIjoxfQ=="));
        assert_eq!(exact(b" [ ] ").expect("empty").len(), 0);
        let spaced = "[ {\n \"offset\" : 3 , \"value\" : null, \"key\": null,\"partition\":-1,\"topic\":\"t\" } ]";
        assert_eq!(exact(spaced.as_bytes()), typed(spaced.as_bytes()));
    }

    #[test]
    fn anything_else_is_left_to_the_typed_path() {
        for other in [
            r#"{"records":[]}"#,                                // the API document's object
            r#"[{"topic":"a\"b","offset":1}]"#,                 // an escape
            r#"[{"topic":"t","offset":1.0}]"#,                  // a fraction
            r#"[{"topic":"t","offset":01}]"#,                   // a leading zero
            r#"[{"topic":"t","offset":99999999999999999999}]"#, // beyond i64
            r#"[{"topic":"t","topic":"u"}]"#,                   // a repeated member
            r#"[{"topic":"t","headers":[]}]"#,                  // another member
            r#"[{"topic":"t"}] x"#,                             // trailing text
            r#"[{"topic":"t"},]"#,                              // a trailing comma
            r#"[{"topic":null}]"#,                              // a null topic
            "[{\"topic\":\"t\u{1}\"}]",                         // a raw control character
        ] {
            assert!(exact(other.as_bytes()).is_none(), "{other}");
        }
        assert_eq!(records(br#"{"records":[{"offset":2}]}"#).expect("typed")[0].offset, Some(2));
    }

    fn member() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z\\-]{0,8}".prop_map(|t| format!("\"topic\":\"{t}\"")),
            Just("\"topic\":null".to_string()),
            "[A-Za-z0-9+/=]{0,40}".prop_map(|k| format!("\"key\":\"{k}\"")),
            Just("\"key\":null".to_string()),
            "[A-Za-z0-9+/=]{0,60}".prop_map(|v| format!("\"value\":\"{v}\"")),
            Just("\"value\":null".to_string()),
            Just("\"value\":\"a\\\\b\"".to_string()),
            any::<i64>().prop_map(|p| format!("\"partition\":{p}")),
            any::<i64>().prop_map(|o| format!("\"offset\":{o}")),
            (0u32..100).prop_map(|o| format!("\"offset\":{o}.5")),
            Just("\"offset\":-0".to_string()),
            Just("\"other\":1".to_string()),
        ]
    }

    fn answer() -> impl Strategy<Value = String> {
        let ws = prop_oneof![Just(""), Just(" "), Just("\n  ")];
        proptest::collection::vec((proptest::collection::vec(member(), 0..7), ws), 0..5).prop_map(|recs| {
            let objs: Vec<String> =
                recs.iter().map(|(m, w)| format!("{{{w}{}{w}}}", m.join(&format!(",{w}")))).collect();
            format!("[{}]", objs.join(","))
        })
    }

    proptest! {
        /// The exact reader reads what the typed path reads, as it reads it, or nothing.
        #[test]
        fn the_exact_reader_agrees_with_the_typed_path(text in answer(), cut in 0usize..400) {
            for body in [text.as_bytes(), &text.as_bytes()[..cut.min(text.len())]] {
                if let Some(fast) = exact(body) {
                    prop_assert_eq!(Some(fast), typed(body), "{}", String::from_utf8_lossy(body));
                }
            }
        }

        /// Canonical answers (each member once, no escape, integers) take the exact path.
        #[test]
        fn canonical_answers_take_the_exact_path(
            recs in proptest::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9+/]{0,80}", 0i64..4, 0i64..1_000_000), 0..20)
        ) {
            let objs: Vec<String> = recs
                .iter()
                .map(|(t, v, p, o)| format!(r#"{{"topic":"{t}","key":null,"value":"{v}","partition":{p},"offset":{o}}}"#))
                .collect();
            let text = format!("[{}]", objs.join(","));
            let fast = exact(text.as_bytes());
            prop_assert!(fast.is_some(), "{}", text);
            prop_assert_eq!(fast, typed(text.as_bytes()));
        }
    }
}
