//! Fast writers for the encodings' hot spots (floats, integers, RFC 3339 times), each
//! producing what the standard formatting it replaces produces (`Display` for `f64`/`u64`,
//! chrono's `to_rfc3339_opts(AutoSi, true)`), as the tests below check; for floats, see
//! [`push_f64`] for the one latitude taken.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Where text is written: a `Vec<u8>` (JSON) or a `String` (line protocol).
pub trait Out {
    fn put(&mut self, s: &str);
}

impl Out for Vec<u8> {
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

impl Out for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// `v` as `Display` writes it: the shortest decimal that reads back as the same `f64`, with
/// no exponent. Where ryu would not use an exponent (1e-5 <= |v| < 1e16, and 0) it writes
/// it instead, 3-4 times faster: the same digits, except that when two shortest forms of
/// 16 or 17 digits both read back exactly, the two may pick a different last digit. Both
/// read back as the same `f64`. Elsewhere (and for non-finite values) `Display` is used.
pub fn push_f64(out: &mut impl Out, v: f64) {
    if push_milli(out, v) {
        return;
    }
    let a = v.abs();
    if v.is_finite() && (a == 0.0 || (1e-5..1e16).contains(&a)) {
        let mut buf = ryu::Buffer::new();
        let s = buf.format_finite(v);
        // ryu writes integral values with ".0", Display without.
        out.put(s.strip_suffix(".0").unwrap_or(s));
        return;
    }
    out.put(&v.to_string());
}

/// `v` when it is a whole number of thousandths (what the twins write: values are rounded
/// to 3 decimals) below 1e9 in magnitude, not zero: written from that integer, which is
/// cheaper than ryu. The text is `Display`'s: it reads back as `v` (`v` is the `f64` nearest
/// to it), and no shorter decimal does, since one with fewer digits would be another whole
/// number of thousandths, at least 0.001 away, and `v`'s rounding interval is under 1e-7
/// wide. Returns false (nothing written) for any other `v`.
fn push_milli(out: &mut impl Out, v: f64) -> bool {
    let k = (v * 1000.0).round();
    if v == 0.0 || k.is_nan() || k.abs() >= 1e12 || k / 1000.0 != v {
        return false;
    }
    let m = (k as i64).unsigned_abs();
    let (int, frac) = (m / 1000, (m % 1000) as u32);
    if v < 0.0 {
        out.put("-");
    }
    out.put(itoa::Buffer::new().format(int));
    if frac > 0 {
        let d = [b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        let keep = if frac % 100 == 0 {
            2
        } else if frac % 10 == 0 {
            3
        } else {
            4
        };
        // ASCII only.
        out.put(std::str::from_utf8(&d[..keep]).unwrap_or_default());
    }
    true
}

/// `v` as `Display` writes it.
pub fn push_u64(out: &mut impl Out, v: u64) {
    out.put(itoa::Buffer::new().format(v));
}

/// `v` as `Display` writes it.
pub fn push_i64(out: &mut impl Out, v: i64) {
    out.put(itoa::Buffer::new().format(v));
}

fn two(v: u32) -> [u8; 2] {
    [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]
}

/// RFC 3339 UTC with `Z`, in whole seconds when possible, else with 3, 6 or 9 fractional
/// digits: chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)`.
pub fn push_rfc3339(out: &mut impl Out, at: DateTime<Utc>) {
    let year = at.year();
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Extended years and leap seconds: chrono's own.
        out.put(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    let y = year as u32;
    let [y1, y2] = two(y / 100);
    let [y3, y4] = two(y);
    let [mo1, mo2] = two(at.month());
    let [d1, d2] = two(at.day());
    let [h1, h2] = two(at.hour());
    let [mi1, mi2] = two(at.minute());
    let [s1, s2] = two(at.second());
    let mut buf = [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2, b'.', b'0', b'0',
        b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'Z',
    ];
    let (digits, frac) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (3, nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    let mut f = frac;
    for i in (0..digits).rev() {
        buf[20 + i] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let len = if digits == 0 {
        buf[19] = b'Z';
        20
    } else {
        buf[20 + digits] = b'Z';
        21 + digits
    };
    // Only ASCII digits and separators were written.
    out.put(std::str::from_utf8(&buf[..len]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible stream of 64-bit values (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        push_f64(&mut out, v);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            12.0,
            31.2,
            -61.07345,
            1e-5,
            9.99e-6,
            1e15,
            9.999e15,
            1e16,
            1e300,
            5e-324,
            0.1,
            0.3,
            123456.789,
            -1e-7,
            f64::MAX,
            f64::MIN_POSITIVE,
            2.5e-5,
            14.604,
        ];
        for _ in 0..200_000 {
            let bits = next();
            cases.push(f64::from_bits(bits));
            // Plausible sensor values too: a few decimals, any magnitude.
            cases.push((bits % 2_000_000) as f64 / 1000.0 - 1000.0);
            cases.push((bits >> 11) as f64 * 1e-10);
        }
        for v in cases.into_iter().filter(|v| v.is_finite()) {
            let (ours, display) = (f(v), format!("{v}"));
            let significant =
                |s: &str| s.bytes().skip_while(|b| matches!(b, b'-' | b'0' | b'.')).filter(u8::is_ascii_digit).count();
            if significant(&display) <= 15 {
                assert_eq!(ours, display, "{v:e}");
            } else {
                // A tie between two shortest forms: the same length, the same value read back.
                assert_eq!(ours.len(), display.len(), "{v:e}: {ours} vs {display}");
                assert_eq!(ours.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{v:e}: {ours}");
            }
        }
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "inf");
    }

    #[test]
    fn whole_thousandths_are_written_as_display_writes_them() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let mut cases: Vec<f64> = vec![0.001, -0.001, 0.01, 0.1, 1.5, 1013.25, 999_999_999.999, -999_999_999.999, 1e9];
        for _ in 0..300_000 {
            let bits = next();
            // Any number of thousandths across the range, and small ones more densely.
            let k = (bits % 2_000_000_000_000) as i64 - 1_000_000_000_000;
            cases.push(k as f64 / 1000.0);
            cases.push((k % 100_000) as f64 / 1000.0);
            // And what the twins compute: a value rounded to 3 decimals.
            let x = f64::from_bits(bits >> 2) % 1e6;
            cases.push((x * 1000.0).round() / 1000.0);
        }
        for v in cases.into_iter().filter(|v| v.is_finite()) {
            assert_eq!(f(v), format!("{v}"), "{v:e}");
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for v in [0u64, 1, 9, 10, 42, 1_795_570_779_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
        for v in [0i64, -1, -1_795_570_779_000, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let base: DateTime<Utc> = "2026-11-25T01:05:00Z".parse().expect("time");
        let mut cases = vec![
            base,
            "0000-01-01T00:00:00Z".parse().expect("time"),
            "9999-12-31T23:59:59.999999999Z".parse().expect("time"),
            "1970-01-01T00:00:00.5Z".parse().expect("time"),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for n in [1i64, 7, 1_000, 1_000_000, 123_456_789, 999_999_999, 86_399_999_999_999, 3_000_000_000_000_000_017] {
            cases.push(base + chrono::Duration::nanoseconds(n));
            cases.push(base - chrono::Duration::nanoseconds(n));
            cases.push(base + chrono::Duration::microseconds(n));
            cases.push(base + chrono::Duration::milliseconds(n % 100_000_000_000));
        }
        for at in cases {
            let mut out = Vec::new();
            push_rfc3339(&mut out, at);
            assert_eq!(String::from_utf8(out).expect("utf-8"), at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
}
