//! Protocol Buffers messages read in place: fields one at a time, strings and embedded
//! messages as slices of the encoding. A usage batch of thousands of records is read this way
//! without a copy or an allocation per record.

use prost::encoding::decode_varint;

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// A field's value as the wire holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Length-delimited: a string, bytes, an embedded message or a packed array.
    Bytes(&'a [u8]),
}

/// What made an encoding unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid protobuf encoding: {0}")]
pub struct Malformed(&'static str);

impl<'a> Value<'a> {
    pub fn varint(self) -> Result<u64, Malformed> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(Malformed("a number field of another wire type")),
        }
    }

    pub fn bytes(self) -> Result<&'a [u8], Malformed> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(Malformed("a string or message field of another wire type")),
        }
    }

    pub fn text(self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("a string that is not UTF-8"))
    }

    /// An `int64` field: its varint is the number's two's complement.
    pub fn int64(self) -> Result<i64, Malformed> {
        Ok(self.varint()? as i64)
    }

    /// A `uint32`, `int32` or enum field: the low 32 bits, as protobuf's parsers take them.
    pub fn low32(self) -> Result<u32, Malformed> {
        Ok(self.varint()? as u32)
    }
}

/// The fields of one message, in the order they were written.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// The next field's number and value; `None` at the message's end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, Malformed> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint("a field key")?;
        let number = key >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(Malformed("a field number out of range"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint("a varint")?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take::<8>()?)),
            2 => {
                let len = self.varint("a length")?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= self.rest.len())
                    .ok_or(Malformed("a length past the message's end"))?;
                let (bytes, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Bytes(bytes)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take::<4>()?)),
            _ => return Err(Malformed("a group or an unknown wire type")),
        };
        // Checked above: the number fits in 29 bits.
        Ok(Some((number as u32, value)))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, Malformed> {
        decode_varint(&mut self.rest).map_err(|_| Malformed(what))
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(Malformed("a fixed-size field past the message's end"))?;
        self.rest = rest;
        Ok(*head)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use sluice_proto::usage::v1 as pb;

    use super::*;

    fn all(message: &[u8]) -> Result<Vec<(u32, Value<'_>)>, Malformed> {
        let mut fields = Fields::new(message);
        let mut out = Vec::new();
        while let Some(field) = fields.next_field()? {
            out.push(field);
        }
        Ok(out)
    }

    #[test]
    fn fields_read_as_prost_wrote_them() {
        let tag = pb::UsageTag {
            name: "team".into(),
            value: "search".into(),
        };
        let record = pb::UsageRecord {
            request_id: "r1".into(),
            started_at_us: -5,
            cost_micros: 1 << 40,
            http_status: 200,
            tags: vec![tag.clone()],
            ..Default::default()
        };
        let encoded = record.encode_to_vec();
        let fields = all(&encoded).unwrap();
        assert_eq!(fields[0], (1, Value::Bytes(b"r1")));
        assert_eq!(fields[1].0, 2);
        assert_eq!(fields[1].1.int64(), Ok(-5));
        assert_eq!(fields[2], (11, Value::Varint(1 << 40)));
        assert_eq!(fields[3].1.low32(), Ok(200));
        assert_eq!(fields[4], (17, Value::Bytes(&tag.encode_to_vec())));
        assert_eq!(fields.len(), 5);
    }

    #[test]
    fn broken_encodings_are_refused() {
        // A length past the end, a truncated varint, field number 0, a group, a cut fixed64.
        for broken in [
            &b"\x0a\x05ab"[..],
            b"\x10\xff",
            b"\x00\x01",
            b"\x0b",
            b"\x09\x01\x02",
        ] {
            assert!(all(broken).is_err(), "{broken:?}");
        }
        assert!(Value::Bytes(b"\xff").text().is_err());
        assert!(Value::Varint(1).bytes().is_err());
        assert!(Value::Bytes(b"").varint().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = all(&bytes);
        }
    }
}
