//! W3C Baggage: parse, format, properties, encoding, limits.

use tracewire_context::limits::{BAGGAGE_MAX_BYTES, BAGGAGE_MAX_MEMBERS};
use tracewire_context::{Baggage, BaggageError};

fn pairs(b: &Baggage) -> Vec<Entry> {
    b.iter().map(|e| (e.key().to_owned(), e.value().to_owned(), e.properties().to_owned())).collect()
}

type Entry = (String, String, String);

fn p(k: &str, v: &str, props: &str) -> Entry {
    (k.to_owned(), v.to_owned(), props.to_owned())
}

#[test]
fn parse_table() {
    let cases: Vec<(&str, Vec<Entry>, usize)> = vec![
        ("key1=value1", vec![p("key1", "value1", "")], 0),
        ("key1 = value1 , key2=value2", vec![p("key1", "value1", ""), p("key2", "value2", "")], 0),
        ("k=v;prop1;prop2=x", vec![p("k", "v", "prop1;prop2=x")], 0),
        ("k=v ; prop1 = x ; p2", vec![p("k", "v", "prop1=x;p2")], 0),
        ("k=", vec![p("k", "", "")], 0),
        ("k=%20a%2Cb%3Dc%25", vec![p("k", " a,b=c%", "")], 0),
        ("k=caf%C3%A9", vec![p("k", "caf\u{e9}", "")], 0),
        // Not UTF-8 after decoding: replacement character, as the specification says.
        ("k=%FF", vec![p("k", "\u{fffd}", "")], 0),
        // A '%' that starts no escape stays literal.
        ("k=100%", vec![p("k", "100%", "")], 0),
        // Invalid members are dropped, valid ones kept.
        ("good=1,bad key=2,also good=3,ok=4", vec![p("good", "1", ""), p("ok", "4", "")], 2),
        ("a=1,noequals,b=2", vec![p("a", "1", ""), p("b", "2", "")], 1),
        ("a=has space,b=2", vec![p("b", "2", "")], 1),
        ("a=x\"y,b=2", vec![p("b", "2", "")], 1),
        ("a=1;bad prop,b=2", vec![p("b", "2", "")], 1),
        ("=1,b=2", vec![p("b", "2", "")], 1),
        (",,, ,", vec![], 0),
        // A repeated key: the later value replaces the earlier one in place.
        ("a=1,b=2,a=3", vec![p("a", "3", ""), p("b", "2", "")], 0),
    ];
    for (input, want, dropped) in cases {
        let parsed = Baggage::parse(input);
        assert_eq!(pairs(&parsed.baggage), want, "{input:?}");
        assert_eq!(parsed.dropped, dropped, "{input:?}");
    }
}

#[test]
fn format_encodes_values() {
    let mut b = Baggage::new();
    b.insert("user", "alice smith").unwrap();
    b.insert("q", "a,b;c=d\\e\"f%").unwrap();
    b.insert_with_properties("city", "Z\u{fc}rich", "lang=de;pii").unwrap();
    assert_eq!(b.header(), "user=alice%20smith,q=a%2Cb%3Bc=d%5Ce%22f%25,city=Z%C3%BCrich;lang=de;pii");
    // And it parses back to the same entries.
    assert_eq!(Baggage::parse(&b.header()).baggage, b);
    assert_eq!(b.insert("bad key", "x"), Err(BaggageError::Key));
    assert_eq!(b.insert_with_properties("k", "x", "bad prop"), Err(BaggageError::Properties));
    assert_eq!(b.remove("user").map(|e| e.value().to_owned()).as_deref(), Some("alice smith"));
    assert_eq!(b.len(), 2);
}

#[test]
fn limits_keep_whole_members_only() {
    let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
    let parsed = Baggage::parse(&many.join(","));
    assert_eq!(parsed.baggage.len(), BAGGAGE_MAX_MEMBERS);
    assert_eq!(parsed.dropped, 70 - BAGGAGE_MAX_MEMBERS);
    assert_eq!(parsed.baggage.iter().last().map(|e| e.key().to_owned()).as_deref(), Some("k63"));

    // 8192 bytes: three members of ~3000 bytes, the third does not fit.
    let big = |k: &str| format!("{k}={}", "x".repeat(3000));
    let parsed = Baggage::parse(&[big("a"), big("b"), big("c"), "d=1".into()].join(","));
    assert_eq!(pairs(&parsed.baggage).iter().map(|e| e.0.clone()).collect::<Vec<_>>(), ["a", "b", "d"]);
    assert_eq!(parsed.dropped, 1);
    assert!(parsed.baggage.header().len() <= BAGGAGE_MAX_BYTES);

    let mut b = Baggage::new();
    assert_eq!(b.insert("k", &"x".repeat(BAGGAGE_MAX_BYTES)), Err(BaggageError::TooLarge));
    assert!(b.is_empty());
}

#[test]
fn several_headers_combine() {
    let parsed = Baggage::from_header_values(["a=1", "b=2,a=3"]);
    assert_eq!(parsed.baggage.header(), "a=3,b=2");
}
