//! The `string` and `bytes` encoders: a serde serializer that writes a plain value (text, a
//! number, a bool, a unit enum variant, bytes) straight into the record's bytes.
//!
//! ```text
//!   &T: Serialize ──► Text ──► str: its UTF-8 │ bytes (bytes format): as they are
//!                              numbers, bools: as serde_json writes them │ unit variant: its name
//!                              Option::Some / newtype: the inner value │ anything else: error
//! ```
//!
//! What it writes is byte for byte what the earlier encoder wrote, which went through
//! `serde_json::to_value` and took the text (or, for `bytes`, the array of numbers) back out
//! of the tree: a `serde_bytes::ByteBuf` of n bytes then built a vector of n JSON values
//! first. Floats use serde_json's formatting (so `1.0` stays `1.0`), a non-finite float is
//! refused as serde_json refused it (it became `null`), and a sequence of small integers
//! (`Vec<u8>` without `serde_bytes`) is still accepted as bytes. The error messages name the
//! JSON kind the value would have had ("a structure is not text"), as before.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

/// Why a value is not plain text (or bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TextError(String);

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TextError {}

impl ser::Error for TextError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

fn not_text(kind: &str) -> TextError {
    TextError(format!("a {kind} is not text"))
}

/// Encodes `value` as `string` (`bytes = false`) or `bytes` (`bytes = true`).
pub(super) fn encode<T: Serialize + ?Sized>(value: &T, bytes: bool) -> Result<Vec<u8>, TextError> {
    value.serialize(Text { bytes })
}

/// The serializer; `bytes`: byte strings and sequences of bytes are accepted.
#[derive(Debug, Clone, Copy)]
struct Text {
    bytes: bool,
}

macro_rules! display {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<Vec<u8>, TextError> {
            Ok(v.to_string().into_bytes())
        })*
    };
}

impl Text {
    fn float(v: f64) -> Result<Vec<u8>, TextError> {
        serde_json::Number::from_f64(v)
            .map(|n| n.to_string().into_bytes())
            .ok_or_else(|| not_text("null"))
    }
}

impl ser::Serializer for Text {
    type Ok = Vec<u8>;
    type Error = TextError;
    type SerializeSeq = ByteSeq;
    type SerializeTuple = ByteSeq;
    type SerializeTupleStruct = ByteSeq;
    type SerializeTupleVariant = Impossible<Vec<u8>, TextError>;
    type SerializeMap = Impossible<Vec<u8>, TextError>;
    type SerializeStruct = Impossible<Vec<u8>, TextError>;
    type SerializeStructVariant = Impossible<Vec<u8>, TextError>;

    display!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, v: f32) -> Result<Vec<u8>, TextError> {
        Self::float(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<Vec<u8>, TextError> {
        Self::float(v)
    }

    fn serialize_char(self, v: char) -> Result<Vec<u8>, TextError> {
        Ok(v.encode_utf8(&mut [0; 4]).as_bytes().to_vec())
    }

    fn serialize_str(self, v: &str) -> Result<Vec<u8>, TextError> {
        Ok(v.as_bytes().to_vec())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Vec<u8>, TextError> {
        if self.bytes {
            Ok(v.to_vec())
        } else {
            Err(not_text("list"))
        }
    }

    fn serialize_none(self) -> Result<Vec<u8>, TextError> {
        Err(not_text("null"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, TextError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Vec<u8>, TextError> {
        Err(not_text("null"))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<Vec<u8>, TextError> {
        Err(not_text("null"))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Vec<u8>, TextError> {
        Ok(variant.as_bytes().to_vec())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, TextError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<u8>, TextError> {
        Err(not_text("structure"))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ByteSeq, TextError> {
        if self.bytes {
            Ok(ByteSeq(Vec::with_capacity(len.unwrap_or(0))))
        } else {
            Err(not_text("list"))
        }
    }

    fn serialize_tuple(self, len: usize) -> Result<ByteSeq, TextError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<ByteSeq, TextError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TextError> {
        Err(not_text("structure"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, TextError> {
        Err(not_text("structure"))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, TextError> {
        Err(not_text("structure"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TextError> {
        Err(not_text("structure"))
    }
}

/// A sequence that must be of bytes: integers from 0 to 255 (a `Vec<u8>` without
/// `serde_bytes`), each taken by [`Byte`] without a detour.
#[derive(Debug)]
struct ByteSeq(Vec<u8>);

impl ByteSeq {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TextError> {
        self.0.push(value.serialize(Byte)?);
        Ok(())
    }
}

fn not_a_byte() -> TextError {
    TextError("not a byte array".into())
}

/// One element of a byte sequence: an integer from 0 to 255 (also inside `Some` or a newtype,
/// as serde_json's tree saw it); anything else is not a byte.
#[derive(Debug, Clone, Copy)]
struct Byte;

macro_rules! integer {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<u8, TextError> {
            u8::try_from(v).map_err(|_| not_a_byte())
        })*
    };
}

macro_rules! not_a_byte {
    ($($method:ident($($arg:ty),*)),*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<u8, TextError> {
            Err(not_a_byte())
        })*
    };
}

impl ser::Serializer for Byte {
    type Ok = u8;
    type Error = TextError;
    type SerializeSeq = Impossible<u8, TextError>;
    type SerializeTuple = Impossible<u8, TextError>;
    type SerializeTupleStruct = Impossible<u8, TextError>;
    type SerializeTupleVariant = Impossible<u8, TextError>;
    type SerializeMap = Impossible<u8, TextError>;
    type SerializeStruct = Impossible<u8, TextError>;
    type SerializeStructVariant = Impossible<u8, TextError>;

    integer!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_u128: u128);

    fn serialize_u8(self, v: u8) -> Result<u8, TextError> {
        Ok(v)
    }

    not_a_byte!(
        serialize_bool(bool),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str)
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<u8, TextError> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<u8, TextError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, TextError> {
        Err(not_a_byte())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, TextError> {
        Err(not_a_byte())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, TextError> {
        Err(not_a_byte())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, TextError> {
        Err(not_a_byte())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TextError> {
        Err(not_a_byte())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, TextError> {
        Err(not_a_byte())
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, TextError> {
        Err(not_a_byte())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TextError> {
        Err(not_a_byte())
    }
}

/// The three sequence shapes a byte array may arrive as (`Vec<u8>`, `[u8; N]`, a tuple struct of
/// bytes): each pushes every element as one byte.
macro_rules! byte_sequence {
    ($($trait:ident :: $method:ident),+) => {$(
        impl ser::$trait for ByteSeq {
            type Ok = Vec<u8>;
            type Error = TextError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TextError> {
                self.push(value)
            }

            fn end(self) -> Result<Vec<u8>, TextError> {
                Ok(self.0)
            }
        }
    )+};
}

byte_sequence!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::encode;

    /// The encoder this one replaced (through `serde_json::to_value`), as the reference.
    fn through_a_tree<T: Serialize>(value: &T, bytes: bool) -> Result<Vec<u8>, String> {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::String(text)) => Ok(text.into_bytes()),
            Ok(serde_json::Value::Number(n)) => Ok(n.to_string().into_bytes()),
            Ok(serde_json::Value::Bool(b)) => Ok(b.to_string().into_bytes()),
            Ok(serde_json::Value::Array(items)) if bytes => items
                .iter()
                .map(|v| v.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| "not a byte array".to_string()),
            Ok(other) => Err(format!(
                "a {} is not text",
                match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Object(_) => "structure",
                    serde_json::Value::Array(_) => "list",
                    _ => "value",
                }
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    fn same<T: Serialize + std::fmt::Debug>(value: T) {
        for bytes in [false, true] {
            let new = encode(&value, bytes).map_err(|e| e.to_string());
            assert_eq!(
                new,
                through_a_tree(&value, bytes),
                "{value:?}, bytes = {bytes}"
            );
        }
    }

    #[derive(Debug, Serialize)]
    enum Side {
        Buy,
        Sell(u8),
        Limit { at: f64 },
    }

    #[derive(Debug, Serialize)]
    struct Id(String);

    #[derive(Debug, Serialize)]
    struct Unit;

    #[derive(Debug, Serialize)]
    struct Pair(u8, u8);

    #[test]
    fn writes_exactly_what_the_tree_encoder_wrote() {
        same("héllo, wörld");
        same(String::new());
        same('ß');
        same(42u8);
        same(-7i64);
        same(u64::MAX);
        same(i64::MIN);
        same(1.0f64);
        same(0.1f64);
        same(1e300f64);
        same(-0.0f64);
        same(0.1f32);
        same(f64::NAN);
        same(f64::INFINITY);
        same(true);
        same(Some("x"));
        same(None::<&str>);
        same(());
        same(Unit);
        same(Id("order-1".into()));
        same(Side::Buy);
        same(Side::Sell(3));
        same(Side::Limit { at: 1.5 });
        same(vec![0u8, 1, 255]);
        same(Vec::<u8>::new());
        same(vec![1u16, 256]);
        same(vec![-1i32]);
        same(vec![1.0f64]);
        same(vec!["a"]);
        same((1u8, 2u8));
        same(Pair(9, 10));
        same(BTreeMap::from([("k", 1)]));
        same(vec![Some(4u8)]);
    }

    #[test]
    fn byte_strings_are_bytes_only_in_the_bytes_format() {
        struct Raw<'a>(&'a [u8]);
        impl Serialize for Raw<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        assert_eq!(encode(&Raw(b"\x00\xff"), true), Ok(vec![0, 255]));
        assert_eq!(
            encode(&Raw(b"ab"), false).map_err(|e| e.to_string()),
            Err("a list is not text".into())
        );
        // The same as the tree encoder for both.
        same_raw(b"\x00\xff");
        fn same_raw(bytes: &[u8]) {
            for is_bytes in [false, true] {
                let new = encode(&Raw(bytes), is_bytes).map_err(|e| e.to_string());
                assert_eq!(new, through_a_tree(&Raw(bytes), is_bytes));
            }
        }
    }
}
