//! Table tests for the Level 2 tracestate rules.

use tracewire_context::limits::{tracestate_valid_key, tracestate_valid_value};
use tracewire_context::{TraceState, TraceStateError as E};

fn members(ts: &TraceState) -> Vec<(String, String)> {
    ts.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

type Case<'a> = (Vec<&'a str>, Vec<(String, String)>);

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn valid_headers() {
    let long_key = format!("a{}", "b".repeat(255));
    let long_value = "v".repeat(256);
    let long_member = format!("{long_key}={long_value}");
    let cases: Vec<Case<'_>> = vec![
        (vec!["rojo=00f067aa0ba902b7"], kv(&[("rojo", "00f067aa0ba902b7")])),
        (vec!["rojo=1,congo=2"], kv(&[("rojo", "1"), ("congo", "2")])),
        // Spaces and tabs around members, empty members.
        (vec![" rojo=1 ,\tcongo=2\t"], kv(&[("rojo", "1"), ("congo", "2")])),
        (vec![",,rojo=1,, ,\t,congo=2,"], kv(&[("rojo", "1"), ("congo", "2")])),
        (vec![""], kv(&[])),
        (vec!["  "], kv(&[])),
        // Multi-tenant keys and every key character.
        (vec!["tenant@vendor=1"], kv(&[("tenant@vendor", "1")])),
        (vec!["0a_-*/@z=1"], kv(&[("0a_-*/@z", "1")])),
        (vec!["9=x"], kv(&[("9", "x")])),
        // Values: printable ASCII but , and =; may begin with a space.
        (vec!["k= leading"], kv(&[("k", " leading")])),
        (vec!["k=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~"], kv(&[("k", "!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~")])),
        (vec!["k=a b c"], kv(&[("k", "a b c")])),
        // Maximal key and value.
        (vec![long_member.as_str()], vec![(long_key.clone(), long_value.clone())]),
        // Several headers are combined in order.
        (vec!["a=1", "b=2", "", "c=3"], kv(&[("a", "1"), ("b", "2"), ("c", "3")])),
    ];
    for (headers, want) in cases {
        let ts = TraceState::from_header_values(headers.iter().copied()).unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        assert_eq!(members(&ts), want, "{headers:?}");
    }
}

#[test]
fn invalid_headers_are_discarded_whole() {
    let too_long_key = format!("a{}", "b".repeat(256));
    let too_long_value = format!("k={}", "v".repeat(257));
    let cases: Vec<(Vec<String>, E)> = vec![
        (vec!["Rojo=1".into()], E::Key(0)),
        (vec!["rojo=1,Congo=2".into()], E::Key(1)),
        (vec!["_a=1".into()], E::Key(0)),
        (vec!["@a=1".into()], E::Key(0)),
        (vec!["a.b=1".into()], E::Key(0)),
        (vec!["a b=1".into()], E::Key(0)),
        (vec!["=1".into()], E::Key(0)),
        (vec!["a =1".into()], E::Key(0)),
        (vec![format!("{too_long_key}=1")], E::Key(0)),
        (vec!["a=".into()], E::Value(0)),
        (vec!["a=1=2".into()], E::Value(0)),
        (vec!["a=\u{e9}".into()], E::Value(0)),
        (vec!["a=x\ty".into()], E::Value(0)),
        (vec!["a=\u{7f}".into()], E::Value(0)),
        (vec![too_long_value], E::Value(0)),
        (vec!["novalue".into()], E::MissingEquals(0)),
        (vec!["a=1".into(), "b".into()], E::MissingEquals(1)),
        // One bad member in a later header discards everything.
        (vec!["a=1".into(), "b=2,C=3".into()], E::Key(2)),
        // Only one entry per key is allowed (Level 2, "Combined Header Value"), also across
        // headers: a repeated key makes the whole header invalid.
        (vec!["a=1,b=2,a=3".into()], E::DuplicateKey(2)),
        (vec!["foo=1,foo=1".into()], E::DuplicateKey(1)),
        (vec!["foo=1".into(), "foo=2".into()], E::DuplicateKey(1)),
        (vec!["a=1".into(), "b=2".into(), String::new(), "a=9,c=3".into()], E::DuplicateKey(2)),
    ];
    for (headers, want) in cases {
        assert_eq!(TraceState::from_header_values(headers.iter().map(String::as_str)), Err(want), "{headers:?}");
    }
}

#[test]
fn thirty_two_members_fit_thirty_three_do_not() {
    let n = |count: usize| (0..count).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    assert_eq!(TraceState::parse(&n(32)).unwrap().len(), 32);
    assert_eq!(TraceState::parse(&n(33)), Err(E::TooManyMembers(33)));
    // Across several headers too.
    let (a, b) = (n(20), (20..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(","));
    assert_eq!(TraceState::from_header_values([a.as_str(), b.as_str()]), Err(E::TooManyMembers(33)));
    // Empty members do not count.
    assert_eq!(TraceState::parse(&format!("{},,,", n(32))).unwrap().len(), 32);
}

#[test]
fn insert_moves_to_front_and_evicts_from_the_end() {
    let mut ts = TraceState::parse("a=1,b=2,c=3").unwrap();
    ts.insert("b", "9").unwrap();
    assert_eq!(ts.header(), "b=9,a=1,c=3");
    ts.insert("new", "x").unwrap();
    assert_eq!(ts.header(), "new=x,b=9,a=1,c=3");
    assert_eq!(ts.remove("a").as_deref(), Some("1"));
    assert_eq!(ts.header(), "new=x,b=9,c=3");
    assert_eq!(ts.insert("Bad", "x"), Err(E::Key(0)));
    assert_eq!(ts.insert("ok", "bad,"), Err(E::Value(0)));
    assert_eq!(ts.header(), "new=x,b=9,c=3", "failed inserts change nothing");

    let mut full = TraceState::parse(&(0..32).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",")).unwrap();
    full.insert("mine", "1").unwrap();
    assert_eq!(full.len(), 32);
    assert_eq!(full.iter().next(), Some(("mine", "1")));
    assert!(full.get("k31").is_none() && full.get("k30").is_some());
}

#[test]
fn serialization_budget_drops_large_members_first_then_from_the_end() {
    // 4 members of 130 characters (large) and small ones: 4*130 + ... > 512.
    let large = |k: &str| format!("{k}={}", "x".repeat(129 - k.len()));
    let small = |k: &str| format!("{k}=1");
    let members = [small("a"), large("l1"), small("b"), large("l2"), large("l3"), small("c"), large("l4")];
    let ts = TraceState::parse(&members.join(",")).unwrap();
    let out = ts.header();
    assert!(out.len() <= 512, "{}", out.len());
    // The large ones go first, rightmost first, only as many as needed.
    assert_eq!(out, [small("a"), large("l1"), small("b"), large("l2"), large("l3"), small("c")].join(","));
    assert!(!out.contains("l4="));

    // Only small members: drop from the end.
    let many: Vec<String> = (0..32).map(|i| format!("k{i:02}={}", "v".repeat(20))).collect();
    let ts = TraceState::parse(&many.join(",")).unwrap();
    let out = ts.header();
    assert!(out.len() <= 512);
    let kept = out.split(',').count();
    assert_eq!(out, many[..kept].join(","));
    assert_eq!(kept, 512 / 25, "each member is 24 characters plus a comma");

    // A single member over the budget (513 characters) is dropped rather than cut.
    let huge = format!("{}={}", "k".repeat(256), "v".repeat(256));
    assert_eq!(TraceState::parse(&huge).unwrap().header(), "");
}

#[test]
fn grammar_helpers() {
    assert!(tracestate_valid_key("a") && tracestate_valid_key("1") && tracestate_valid_key("a@b"));
    assert!(!tracestate_valid_key("") && !tracestate_valid_key("A") && !tracestate_valid_key("a="));
    assert!(tracestate_valid_value(" x") && !tracestate_valid_value("x ") && !tracestate_valid_value(""));
}
