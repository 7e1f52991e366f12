//! Parsing one JSON-RPC line for the tap in memory bounded by the line.
//!
//! A `serde_json::Value` costs tens of bytes per value whatever the value's
//! size: a 16 MiB line of `[0,0,0,...]` becomes eight million values and
//! hundreds of MiB. Lines up to [`SMALL_LINE`] are parsed as usual (their
//! tree is a few MiB at worst); longer ones may hold at most
//! [`MAX_VALUES`] values, so their tree costs about the line's own size
//! (the strings) plus a fixed amount. A longer line with more values is
//! one the tap cannot inspect within its bound: it is refused, never
//! passed on unread.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Lines up to this long are parsed without a bound on their values.
pub const SMALL_LINE: usize = 1 << 20;
/// Values (strings, numbers, containers...) a longer line may hold.
pub const MAX_VALUES: usize = 100_000;

/// Why a line did not become a value.
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON (or not JSON serde_json reads).
    Json,
    /// JSON with more values than a line of its length may hold.
    TooManyValues,
}

/// The line as a value, within the bounds above.
pub fn line(line: &[u8]) -> Result<Value, ParseError> {
    if line.len() <= SMALL_LINE {
        return serde_json::from_slice(line).map_err(|_| ParseError::Json);
    }
    let mut left = MAX_VALUES;
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = Bounded { left: &mut left }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match value {
        Ok(v) => Ok(v),
        Err(_) if left == 0 => Err(ParseError::TooManyValues),
        Err(_) => Err(ParseError::Json),
    }
}

/// Builds a value, counting each one against `left`.
struct Bounded<'a> {
    left: &'a mut usize,
}

impl Bounded<'_> {
    fn take<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if *self.left == 0 {
            return Err(E::custom("too many values"));
        }
        *self.left -= 1;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(mut self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded {
            left: &mut *self.left,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // A key costs as much as a value.
            self.take()?;
            let v = map.next_value_seed(Bounded {
                left: &mut *self.left,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Bytes `v` takes as JSON, without writing it anywhere.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lines_parse_as_usual_and_long_ones_within_the_bound() {
        assert_eq!(
            line(br#"{"a":[1,2]}"#).unwrap(),
            serde_json::json!({"a":[1,2]})
        );
        assert!(matches!(line(b"{nope"), Err(ParseError::Json)));
        // A long line of few values: one big string.
        let text = "x".repeat(SMALL_LINE + 10);
        let long = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"text": text, "n": -1.5, "k": [true, null, 7]}});
        let bytes = serde_json::to_vec(&long).unwrap();
        assert_eq!(line(&bytes).unwrap(), long);
        assert_eq!(json_len(&long), bytes.len());
        // A long line of many small values.
        let many = format!("[{}0]", "0,".repeat(SMALL_LINE));
        assert!(matches!(
            line(many.as_bytes()),
            Err(ParseError::TooManyValues)
        ));
        let bad = format!("[\"{}\"", "x".repeat(SMALL_LINE));
        assert!(matches!(line(bad.as_bytes()), Err(ParseError::Json)));
        let trailing = format!("[\"{}\"] x", "x".repeat(SMALL_LINE));
        assert!(matches!(line(trailing.as_bytes()), Err(ParseError::Json)));
    }
}
