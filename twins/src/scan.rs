//! A cursor over JSON text for readers of one exact layout (the MQTT payload's fast path in
//! [`crate::observation`], twinrt's reader of Pandaproxy fetch answers): each step reads
//! one token of the expected shape, or gives up (`None`) and leaves the text to a full JSON
//! parser. So a step accepts only what such a parser reads the same way.

/// Position in a JSON text.
pub struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    pub fn new(b: &'a [u8]) -> Scan<'a> {
        Scan { b, i: 0 }
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.i..]
    }

    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The next byte, taken.
    pub fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// Exactly the bytes `s`.
    pub fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i.checked_add(s.len())?;
        (self.b.get(self.i..end)? == s).then(|| self.i = end)
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    pub fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A JSON string without escapes: `"`, UTF-8 text with no `\` and no control
    /// character (JSON forbids those raw), `"`. Its end is found with `memchr` (SIMD): a
    /// base64 value of a fetch answer is ~700 bytes.
    pub fn string(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let rest = self.rest();
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        let raw = &rest[..len];
        if rest[len] != b'"' || raw.iter().any(|&c| c < 0x20) {
            return None;
        }
        let s = std::str::from_utf8(raw).ok()?;
        self.i += len + 1;
        Some(s)
    }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite.
    pub fn number(&mut self) -> Option<f64> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        if b.get(i) == Some(&b'0') {
            i += 1;
        } else if !digits(&mut i) {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        // Correctly rounded, as serde_json's `float_roundtrip` reading.
        let v: f64 = std::str::from_utf8(&b[start..i]).ok()?.parse().ok()?;
        self.i = i;
        v.is_finite().then_some(v)
    }

    /// A JSON integer that fits a u64 (no sign, no fraction, no leading zero).
    pub fn uint(&mut self) -> Option<u64> {
        let rest = self.rest();
        let len = rest.iter().position(|c| !c.is_ascii_digit()).unwrap_or(rest.len());
        if len == 0 || (len > 1 && rest[0] == b'0') || matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut v: u64 = 0;
        for &d in &rest[..len] {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.i += len;
        Some(v)
    }

    /// A JSON integer that fits an i64, as serde reads one into an `i64`: no fraction, no
    /// exponent, no leading zero, and not `-0` (serde reads that as a float).
    pub fn int(&mut self) -> Option<i64> {
        if self.peek() != Some(b'-') {
            return i64::try_from(self.uint()?).ok();
        }
        let start = self.i;
        self.i += 1;
        let magnitude = match self.uint() {
            Some(m) if m > 0 => m,
            _ => {
                self.i = start;
                return None;
            }
        };
        0i64.checked_sub_unsigned(magnitude).or_else(|| {
            self.i = start;
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Scan;

    #[test]
    fn each_step_reads_its_token_or_gives_up() {
        let mut s = Scan::new(br#""ab" -12 7 0.5e1 "a\"b""#);
        assert_eq!(s.string(), Some("ab"));
        s.ws();
        assert_eq!(s.int(), Some(-12));
        s.ws();
        assert_eq!(s.uint(), Some(7));
        s.ws();
        assert_eq!(s.number(), Some(5.0));
        s.ws();
        assert_eq!(s.string(), None, "an escape is left to the parser");
        for (text, int) in [
            ("-0", None),
            ("01", None),
            ("1.0", None),
            ("1e3", None),
            ("-", None),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
        ] {
            assert_eq!(Scan::new(text.as_bytes()).int(), int, "{text}");
        }
        assert_eq!(Scan::new(b"\"a\x01\"").string(), None, "a raw control character");
    }
}
