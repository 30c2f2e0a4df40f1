use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
struct Order {
    id: String,
    qty: i32,
}

fn codecs(key: Format, value: Format) -> Codecs {
    Codecs::new(
        TopicFormat {
            key,
            value,
            value_schema: None,
        },
        BTreeMap::new(),
        None,
    )
    .expect("no avro, no registry needed")
}

#[test]
fn json_values_round_trip_and_malformed_json_is_poison() {
    let c = codecs(Format::String, Format::Json);
    let order = Order {
        id: "o-1".into(),
        qty: 2,
    };
    let bytes = c.encode("t", Part::Value, &order).expect("encode");
    assert_eq!(c.decode::<Order>("t", Part::Value, Some(&bytes)), Ok(order));
    let bad = c.decode::<Order>("t", Part::Value, Some(b"{oops"));
    assert!(matches!(bad, Err(CodecError::Poison(m)) if m.starts_with("value:")));
    let wrong_type = c.decode::<Order>("t", Part::Value, Some(br#"{"id":"o","qty":"two"}"#));
    assert!(matches!(wrong_type, Err(CodecError::Poison(m)) if m.contains("invalid type")));
}

#[test]
fn null_parts_decode_to_none_or_a_clear_error() {
    let c = codecs(Format::String, Format::Json);
    assert_eq!(c.decode::<Option<String>>("t", Part::Key, None), Ok(None));
    let required = c.decode::<String>("t", Part::Key, None);
    assert_eq!(
        required,
        Err(CodecError::Poison(
            "the record has no key, which the topology requires".into()
        ))
    );
}

#[test]
fn string_keys_check_utf8() {
    let c = codecs(Format::String, Format::Json);
    assert_eq!(
        c.decode::<String>("t", Part::Key, Some(b"k-1")),
        Ok("k-1".to_string())
    );
    assert!(c.decode::<String>("t", Part::Key, Some(&[0xff])).is_err());
    assert_eq!(
        c.encode("t", Part::Key, &"k-2".to_string()),
        Ok(b"k-2".to_vec())
    );
    assert_eq!(c.encode("t", Part::Key, &42i64), Ok(b"42".to_vec()));
    assert!(c
        .encode(
            "t",
            Part::Key,
            &Order {
                id: "x".into(),
                qty: 1
            }
        )
        .is_err());
}

#[test]
fn per_topic_formats_override_the_default() {
    let mut topics = BTreeMap::new();
    topics.insert(
        "raw".to_string(),
        TopicFormat {
            key: Format::Bytes,
            value: Format::String,
            value_schema: None,
        },
    );
    let c = Codecs::new(TopicFormat::default(), topics, None).expect("codecs");
    assert_eq!(c.format_of("raw").value, Format::String);
    assert_eq!(c.format_of("other").value, Format::Json);
    assert_eq!(
        c.decode::<String>("raw", Part::Value, Some(b"{not json")),
        Ok("{not json".into())
    );
}

#[test]
fn avro_needs_a_registry() {
    let err = Codecs::new(
        TopicFormat {
            key: Format::String,
            value: Format::Avro,
            value_schema: None,
        },
        BTreeMap::new(),
        None,
    )
    .expect_err("no registry");
    assert!(err.contains("schema_registry"), "{err}");
    assert_eq!(
        Format::parse("xml").expect_err("bad"),
        "\"xml\" is not a format; one of: bytes, string, json, avro"
    );
}

#[test]
fn truncated_and_foreign_avro_bytes_are_poison_without_asking_the_registry() {
    // Nothing listens on this port: a registry call would come back Unavailable, not Poison.
    let mut registry = RegistryConfig::new("http://127.0.0.1:9");
    registry.unavailable_timeout = std::time::Duration::from_millis(1);
    let c = Codecs::new(
        TopicFormat {
            key: Format::String,
            value: Format::Avro,
            value_schema: None,
        },
        BTreeMap::new(),
        Some(&registry),
    )
    .expect("codecs");
    for bytes in [&[0u8, 0, 0][..], &[1, 0, 0, 0, 1, 2][..], &[][..]] {
        let result = c.decode::<Order>("t", Part::Value, Some(bytes));
        assert!(
            matches!(result, Err(CodecError::Poison(_))),
            "{bytes:?}: {result:?}"
        );
    }
    let unreachable = c.decode::<Order>("t", Part::Value, Some(&[0, 0, 0, 0, 7, 2]));
    assert!(
        matches!(unreachable, Err(CodecError::Unavailable(_))),
        "{unreachable:?}"
    );
}
