//! [`Values`]: the measured values of one observation, kept inline (no allocation).
//!
//! An observation is made on one thread and dropped on another (the sink's); with a `Vec`
//! its values cost one allocation each way, freed across threads (see BENCHMARKS.md,
//! throughput). No kind has more than [`Values::CAPACITY`] quantities.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::{Deref, DerefMut};

/// Up to [`Values::CAPACITY`] numbers, in quantity order. Derefs to `[f64]`; serializes as
/// a sequence, like the `Vec<f64>` it replaced.
#[derive(Clone, Copy)]
pub struct Values {
    len: u8,
    buf: [f64; Values::CAPACITY],
}

/// More values than an observation can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} values, more than the {cap} an observation holds", cap = Values::CAPACITY)]
pub struct TooManyValues(pub usize);

impl Values {
    /// The most quantities of any kind (weather's 7).
    pub const CAPACITY: usize = 7;

    pub const fn new() -> Values {
        Values { len: 0, buf: [0.0; Values::CAPACITY] }
    }

    /// Appends `v`, or says there is no room.
    pub fn try_push(&mut self, v: f64) -> Result<(), TooManyValues> {
        let i = usize::from(self.len);
        match self.buf.get_mut(i) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                Ok(())
            }
            None => Err(TooManyValues(i + 1)),
        }
    }

    /// Appends `v`.
    ///
    /// # Panics
    /// When full: callers push one value per quantity of a kind, and no kind has more than
    /// [`Values::CAPACITY`] (a test of `kind` checks it).
    pub fn push(&mut self, v: f64) {
        if let Err(e) = self.try_push(v) {
            panic!("{e}");
        }
    }

    /// `n` times `value`.
    ///
    /// # Panics
    /// When `n` is more than [`Values::CAPACITY`] (`n` is a kind's number of quantities).
    pub fn filled(value: f64, n: usize) -> Values {
        let mut v = Values::new();
        for _ in 0..n {
            v.push(value);
        }
        v
    }

    /// Copies `xs`, or says it is too long.
    pub fn try_from_slice(xs: &[f64]) -> Result<Values, TooManyValues> {
        let mut v = Values::new();
        v.buf.get_mut(..xs.len()).ok_or(TooManyValues(xs.len()))?.copy_from_slice(xs);
        v.len = xs.len() as u8;
        Ok(v)
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.buf[..usize::from(self.len)]
    }
}

impl Default for Values {
    fn default() -> Values {
        Values::new()
    }
}

impl Deref for Values {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        self.as_slice()
    }
}

impl DerefMut for Values {
    fn deref_mut(&mut self) -> &mut [f64] {
        &mut self.buf[..usize::from(self.len)]
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Values) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// From a fixed-size array (the models' `[a, b, c, d]`); more than
/// [`Values::CAPACITY`] elements fails to compile.
impl<const N: usize> From<[f64; N]> for Values {
    fn from(xs: [f64; N]) -> Values {
        const { assert!(N <= Values::CAPACITY, "more values than an observation holds") };
        let mut v = Values::new();
        v.buf[..N].copy_from_slice(&xs);
        v.len = N as u8;
        v
    }
}

impl TryFrom<&[f64]> for Values {
    type Error = TooManyValues;
    fn try_from(xs: &[f64]) -> Result<Values, TooManyValues> {
        Values::try_from_slice(xs)
    }
}

impl TryFrom<Vec<f64>> for Values {
    type Error = TooManyValues;
    fn try_from(xs: Vec<f64>) -> Result<Values, TooManyValues> {
        Values::try_from_slice(&xs)
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = &'a f64;
    type IntoIter = std::slice::Iter<'a, f64>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {} numbers", Values::CAPACITY)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut v = Values::new();
                let mut n = 0;
                while let Some(x) = seq.next_element::<f64>()? {
                    n += 1;
                    v.try_push(x).map_err(|_| A::Error::invalid_length(n, &self))?;
                }
                Ok(v)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_its_capacity_and_refuses_more() {
        let mut v = Values::new();
        for i in 0..Values::CAPACITY {
            v.try_push(i as f64).expect("room");
        }
        assert_eq!(v.len(), Values::CAPACITY);
        assert_eq!(v.try_push(9.0), Err(TooManyValues(Values::CAPACITY + 1)));
        assert_eq!(Values::try_from_slice(&[0.0; 8]).err(), Some(TooManyValues(8)));
        assert_eq!(&*Values::from([1.0, 2.5]), &[1.0, 2.5]);
    }

    #[test]
    fn serializes_as_the_sequence_it_holds() {
        let v = Values::from([1.5, -2.0, 0.001]);
        let json = serde_json::to_string(&v).expect("serialize");
        assert_eq!(json, "[1.5,-2.0,0.001]");
        let back: Values = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, v);
        let err = serde_json::from_str::<Values>("[1,2,3,4,5,6,7,8]").expect_err("8 values");
        assert!(err.to_string().contains("at most 7"), "{err}");
    }

    #[test]
    fn equality_ignores_the_unused_room() {
        let mut a = Values::from([1.0]);
        let b = Values::from([1.0]);
        a.buf[3] = 7.0;
        assert_eq!(a, b);
    }
}
