use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Eighths print and read back exactly (serde_json's float parsing is not exact).
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 8.0)),
        "\\PC{0,12}".prop_map(Value::String),
        "[\"\\\\/\u{0}-\u{1f}{}\\[\\],: ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// What the walk finds, each member's value read back by serde.
fn walked(text: &str) -> Option<Vec<(String, Value)>> {
    let mut found = Vec::new();
    JsonCursor::new(text.as_bytes()).object(|key, cursor| {
        found.push((key.to_vec(), cursor.value().map(<[u8]>::to_vec)));
    })?;
    found
        .into_iter()
        .map(|(key, value)| {
            let key: String = serde_json::from_slice(&[b"\"", &key[..], b"\""].concat()).ok()?;
            Some((key, serde_json::from_slice(&value?).ok()?))
        })
        .collect()
}

/// Every string of the JSON at the cursor, read by descending into every object and array
/// (a cursor that finds no object or array where it looks stays where it was).
fn strings_descending(cursor: &mut JsonCursor<'_>, out: &mut Vec<String>) {
    if cursor
        .object(|_, cursor| strings_descending(cursor, out))
        .is_some()
        || cursor
            .array(|cursor| strings_descending(cursor, out))
            .is_some()
    {
        return;
    }
    if let Some(Ok(Value::String(text))) = cursor.value().map(serde_json::from_slice) {
        out.push(text);
    }
}

fn strings_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings_of(item, out)),
        Value::Object(members) => members.values().for_each(|item| strings_of(item, out)),
        _ => {}
    }
}

proptest! {
    #[test]
    fn members_are_what_serde_reads(object in prop::collection::btree_map("[a-z\"\\\\]{0,6}", json_value(), 0..8)) {
        let expected: Vec<(String, Value)> = object.clone().into_iter().collect();
        let value = Value::Object(object.into_iter().collect());
        for text in [format!("{value}"), format!("{value:#}")] {
            prop_assert_eq!(walked(&text), Some(expected.clone()), "{}", text);
        }
    }

    #[test]
    fn elements_are_what_serde_reads(items in prop::collection::vec(json_value(), 0..8)) {
        let value = Value::Array(items.clone());
        for text in [format!("{value}"), format!("{value:#}")] {
            let mut read = Vec::new();
            JsonCursor::new(text.as_bytes()).array(|cursor| {
                read.push(cursor.value().and_then(|json| serde_json::from_slice::<Value>(json).ok()));
            });
            let expected: Vec<Option<Value>> = items.iter().cloned().map(Some).collect();
            prop_assert_eq!(&read, &expected, "{}", text);
        }
    }

    #[test]
    fn a_walk_into_every_value_finds_what_serde_finds(value in json_value()) {
        let mut expected = Vec::new();
        strings_of(&value, &mut expected);
        for text in [format!("{value}"), format!("{value:#}")] {
            let mut found = Vec::new();
            strings_descending(&mut JsonCursor::new(text.as_bytes()), &mut found);
            prop_assert_eq!(&found, &expected, "{}", text);
        }
    }

    #[test]
    fn string_chars_counts_the_decoded_characters(text in "\\PC{0,24}", escape_every in 1usize..4) {
        // Spelt as serde writes it, and with every n-th character as a \u escape (surrogate
        // pairs past the basic plane).
        let plain = Value::String(text.clone()).to_string();
        prop_assert_eq!(string_chars(plain.as_bytes()), Some(text.chars().count()));
        let mut escaped = String::from("\"");
        for (index, ch) in text.chars().enumerate() {
            if index % escape_every == 0 || ch == '"' || ch == '\\' || ch < ' ' {
                let mut units = [0_u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    escaped.push_str(&format!("\\u{unit:04X}"));
                }
            } else {
                escaped.push(ch);
            }
        }
        escaped.push('"');
        prop_assert_eq!(serde_json::from_str::<String>(&escaped).ok(), Some(text.clone()));
        prop_assert_eq!(string_chars(escaped.as_bytes()), Some(text.chars().count()));
    }

    #[test]
    fn any_bytes_end_the_walk_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut cursor = JsonCursor::new(&bytes);
        let _ = cursor.object(|_, cursor| {
            let _ = cursor.array(|cursor| {
                let _ = cursor.value().map(string_chars);
            });
        });
        let mut found = Vec::new();
        strings_descending(&mut JsonCursor::new(&bytes), &mut found);
    }

    #[test]
    fn a_cut_object_yields_only_whole_members(value in json_value(), cut in any::<prop::sample::Index>()) {
        let text = Value::Object([("k".to_owned(), value.clone()), ("z".to_owned(), Value::Null)].into_iter().collect()).to_string();
        let cut = &text.as_bytes()[..cut.index(text.len())];
        let mut read = Vec::new();
        let whole = JsonCursor::new(cut).object(|key, cursor| read.push((key, cursor.value())));
        prop_assert!(whole.is_none());
        for (key, member) in read {
            match (key, member) {
                // A number cut short still reads as a number.
                (b"k", Some(member)) if value.is_number() => prop_assert!(value.to_string().as_bytes().starts_with(member)),
                (b"k", Some(member)) => prop_assert_eq!(serde_json::from_slice::<Value>(member).ok(), Some(value.clone())),
                (b"z", Some(member)) => prop_assert_eq!(member, b"null"),
                // The value itself was cut.
                (b"k" | b"z", None) => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

#[test]
fn a_chat_chunk_is_walked_to_its_content() {
    let chunk = br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi \"you\" \u00e9\ud83d\ude00"},"finish_reason":null}],"usage":null}"#;
    let (mut keys, mut content) = (Vec::new(), None);
    JsonCursor::new(chunk).object(|key, cursor| {
        keys.push(key);
        if key == b"choices" {
            cursor.array(|cursor| {
                cursor.object(|key, cursor| {
                    if key == b"delta" {
                        cursor.object(|_, cursor| content = cursor.value());
                    }
                });
            });
        }
    });
    assert_eq!(keys, [&b"id"[..], b"object", b"choices", b"usage"]);
    assert_eq!(
        content.and_then(string_chars),
        Some("Hi \"you\" é😀".chars().count())
    );
}

#[test]
fn what_is_no_object_or_no_string_yields_nothing() {
    let keys = |json: &[u8]| {
        let mut count = 0;
        let whole = JsonCursor::new(json).object(|_, _| count += 1);
        (whole.is_some(), count)
    };
    assert_eq!(keys(b"[1,2]"), (false, 0));
    assert_eq!(keys(b""), (false, 0));
    assert_eq!(keys(b" { } "), (true, 0));
    assert_eq!(keys(br#"{"a" 1}"#), (false, 0));
    assert_eq!(keys(br#"{"a":1,}"#), (false, 1));
    assert!(JsonCursor::new(b"{\"a\":1}").array(|_| {}).is_none());
    assert!(JsonCursor::new(b"[]").array(|_| {}).is_some());
    assert_eq!(string_chars(b"12"), None);
    assert_eq!(string_chars(b"\""), None);
}

#[test]
fn literals_are_whole_words_and_numbers_run_to_a_delimiter() {
    let values = |json: &[u8]| {
        let mut values = Vec::new();
        let whole = JsonCursor::new(json)
            .object(|_, cursor| values.push(cursor.value().map(<[u8]>::to_vec)));
        (whole.is_some(), values)
    };
    let some = |text: &str| Some(text.as_bytes().to_vec());
    assert_eq!(
        values(br#"{"a":true,"b":false ,"c":null}"#),
        (true, vec![some("true"), some("false"), some("null")])
    );
    assert_eq!(
        values(br#"{"a":-1.5e3,"b":0}"#),
        (true, vec![some("-1.5e3"), some("0")])
    );
    assert_eq!(values(br#"{"a":truex}"#), (false, vec![None]));
    assert_eq!(values(br#"{"a":nul}"#), (false, vec![None]));
    assert_eq!(values(br#"{"a":tru"#), (false, vec![None]));
    assert_eq!(values(br#"{"a":x}"#), (false, vec![None]));
    assert_eq!(values(b"{\"a\":false"), (false, vec![some("false")]));
}

proptest! {
    #[test]
    fn whole_documents_are_told_from_cut_ones(value in json_value(), cut in any::<prop::sample::Index>()) {
        let document = match value {
            Value::Object(_) | Value::Array(_) => value,
            other => Value::Array(vec![other]),
        };
        for text in [document.to_string(), serde_json::to_string_pretty(&document).unwrap_or_default()] {
            prop_assert!(is_whole_document(text.as_bytes()), "{text}");
            let padded = format!(" \n{text}\r\n ");
            prop_assert!(is_whole_document(padded.as_bytes()), "{padded}");
            // Any cut short of the end leaves a document that is not whole.
            let at = cut.index(text.len());
            if text.is_char_boundary(at) && text[at..].trim() != "" {
                prop_assert!(!is_whole_document(&text.as_bytes()[..at]), "{}", &text[..at]);
            }
        }
    }
}

#[test]
fn what_upstreams_send_instead_of_an_answer_is_not_whole() {
    for text in [
        "",
        "   ",
        "<html><body>502 Bad Gateway</body></html>",
        "null",
        "\"a string\"",
        "{\"id\": \"chatcmpl-cut\", \"choi",
        "{\"a\": \"unclosed}",
        "{\"a\": 1}}",
        "{\"a\": 1} trailing",
        "{\"a\": 1}{\"b\": 2}",
    ] {
        assert!(!is_whole_document(text.as_bytes()), "{text}");
    }
    assert!(is_whole_document(b"{\"a\": \"}\\\"{\"}"));
}

#[test]
fn a_walk_stops_where_its_reader_says() {
    let json = br#"{"id": "a", "model": "m", "choices": [1, 2, 3], "usage": {"x": 1}}"#;
    let mut seen = Vec::new();
    let walked = JsonCursor::new(json).object_while(|key, cursor| {
        seen.push(key.to_vec());
        let _ = cursor.value();
        key != b"model"
    });
    assert_eq!(walked, Some(()));
    assert_eq!(seen, [b"id".to_vec(), b"model".to_vec()]);
    let mut all = 0;
    assert_eq!(
        JsonCursor::new(json).object_while(|_, _| {
            all += 1;
            true
        }),
        Some(())
    );
    assert_eq!(all, 4);
    assert_eq!(JsonCursor::new(b"[1]").object_while(|_, _| true), None);
}
