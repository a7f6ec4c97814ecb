//! A message kept as its protobuf encoding: the read cache holds each entity's current version
//! this way, encoded once when the replica applies it, and a response embeds those bytes as
//! they are (a length-delimited field of a message is its encoding, whatever the parent).
//! Cloning shares the bytes.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType};

/// The encoding of one `M`.
pub struct Encoded<M> {
    bytes: Bytes,
    message: PhantomData<fn() -> M>,
}

impl<M: prost::Message + Default> Encoded<M> {
    /// Encodes `message`.
    pub fn of(message: &M) -> Self {
        Encoded::from_bytes(Bytes::from(message.encode_to_vec()))
    }

    /// The message back (tests, and the rare reader that needs its fields).
    pub fn decode(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.bytes.clone())
    }
}

impl<M> Encoded<M> {
    /// Bytes that are an encoding of `M` (not checked).
    pub fn from_bytes(bytes: Bytes) -> Self {
        Encoded {
            bytes,
            message: PhantomData,
        }
    }

    /// The encoding's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The string field numbered `field` ("" when absent: proto3 leaves out empty strings).
    pub fn string(&self, field: u32) -> &str {
        string_field(&self.bytes, field)
    }
}

/// The string field numbered `field` of the encoding `bytes`, read by walking its fields in
/// order (cheap for the first few: an id is the second); "" when absent (or, for bytes this
/// module never makes, unreadable).
pub fn string_field(bytes: &[u8], field: u32) -> &str {
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut rest) else {
            return "";
        };
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let skip = match wire {
            0 => match prost::encoding::decode_varint(&mut rest) {
                Ok(_) => 0,
                Err(_) => return "",
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut rest) {
                Ok(len) => len as usize,
                Err(_) => return "",
            },
            5 => 4,
            _ => return "",
        };
        if skip > rest.len() {
            return "";
        }
        let (value, after) = rest.split_at(skip);
        if tag == field && wire == 2 {
            return std::str::from_utf8(value).unwrap_or("");
        }
        rest = after;
    }
    ""
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Encoded::from_bytes(self.bytes.clone())
    }
}

impl<M> Default for Encoded<M> {
    fn default() -> Self {
        Encoded::from_bytes(Bytes::new())
    }
}

impl<M> PartialEq for Encoded<M> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<M> fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded({} bytes of {})", self.bytes.len(), std::any::type_name::<M>())
    }
}

impl<M> prost::Message for Encoded<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Keeps each field as it came (re-encoding only its key and, for a varint, its value), so
    /// decoding then encoding gives the same message.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{bytes, encode_key, encode_varint, fixed32, fixed64, uint64};
        let mut out = BytesMut::from(&self.bytes[..]);
        encode_key(tag, wire_type, &mut out);
        match wire_type {
            WireType::Varint => {
                let mut v = 0u64;
                uint64::merge(wire_type, &mut v, buf, ctx)?;
                encode_varint(v, &mut out);
            }
            WireType::SixtyFourBit => {
                let mut v = 0u64;
                fixed64::merge(wire_type, &mut v, buf, ctx)?;
                out.put_u64_le(v);
            }
            WireType::ThirtyTwoBit => {
                let mut v = 0u32;
                fixed32::merge(wire_type, &mut v, buf, ctx)?;
                out.put_u32_le(v);
            }
            WireType::LengthDelimited => {
                let mut v = Bytes::new();
                bytes::merge(wire_type, &mut v, buf, ctx)?;
                encode_varint(v.len() as u64, &mut out);
                out.put(v);
            }
            // Groups (proto2) are not used by this API: refused as a wire type mismatch.
            WireType::StartGroup | WireType::EndGroup => {
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
            }
        }
        self.bytes = out.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message;

    #[test]
    fn a_string_field_is_read_from_the_encoding() {
        let u = pb::Encoded::of(&pb::User {
            name: "users/user_1".into(),
            id: "user_1".into(),
            external_id: String::new(),
            username: "ada".into(),
            create_time: Some(prost_types::Timestamp { seconds: 5, nanos: 1 }),
            ..Default::default()
        });
        assert_eq!(u.string(1), "users/user_1");
        assert_eq!(u.string(2), "user_1");
        assert_eq!(u.string(3), "");
        assert_eq!(u.string(4), "ada");
        assert_eq!(string_field(&[0x12, 0x05, b'a'], 2), "", "a truncated field is not read");
    }

    fn user() -> pb::User {
        pb::User {
            name: "users/user_1".into(),
            id: "user_1".into(),
            first_name: "Ada".into(),
            email_addresses: vec![pb::EmailAddress {
                id: "idn_1".into(),
                email_address: "ada@example.com".into(),
                ..Default::default()
            }],
            banned: true,
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_message_in_a_parent_is_the_message_in_that_parent() {
        let u = user();
        let served = crate::pb::served::GetUserResponse {
            user: Some(Encoded::of(&u)),
            cursor: "c1.x".into(),
        };
        let plain = pb::GetUserResponse {
            user: Some(u.clone()),
            cursor: "c1.x".into(),
        };
        assert_eq!(served.encode_to_vec(), plain.encode_to_vec());
        assert_eq!(served.encoded_len(), plain.encoded_len());
        assert_eq!(Encoded::of(&u).decode().unwrap(), u);
    }

    #[test]
    fn decoding_into_an_encoded_message_keeps_every_field_and_a_truncated_one_fails() {
        let u = user();
        let bytes = pb::GetUserResponse {
            user: Some(u.clone()),
            cursor: "c".into(),
        }
        .encode_to_vec();
        let served = crate::pb::served::GetUserResponse::decode(&bytes[..]).unwrap();
        assert_eq!(served.user.as_ref().unwrap().decode().unwrap(), u);
        assert_eq!(served.encode_to_vec(), bytes);
        let mut e = Encoded::<pb::User>::default();
        assert!(e.merge(&[0x0a, 0x05, b'a'][..]).is_err(), "a field longer than the input");
        assert!(e.merge(&[0x0b][..]).is_err(), "a group");
    }
}
