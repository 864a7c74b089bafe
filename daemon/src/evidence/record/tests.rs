//! Unit tests of entries and their encodings.

use super::*;
use serde_json::json;

/// A valid entry for tests; `n` varies a few fields.
pub(in super::super) fn sample(n: u64) -> NewEntry {
    let details = json!({
        "proto": "tcp",
        "port": 8080 + n,
        "cgroup_id": 4242,
        "args": ["curl", "-s", "http://127.0.0.1:8080/"],
        "flags": {"hold": false, "dry_run": n.is_multiple_of(2)},
    });
    NewEntry {
        ts_ns: 1_767_225_600_000_000_000 + n as i64 * 1_000,
        kind: "decision".into(),
        agent: "coder-1".into(),
        owner: "alice@example.com".into(),
        uid: 1000,
        loginuid: 1000,
        user: "alice".into(),
        login_user: "alice".into(),
        pid: 31337 + n as u32,
        exe: "/usr/bin/curl".into(),
        action: "connect4".into(),
        target: format!("127.0.0.1:{}/tcp", 8080 + n),
        decision: if n.is_multiple_of(3) { "deny" } else { "allow" }.into(),
        rule_id: "net.allow.localhost".into(),
        policy_snapshot: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        method: "cgroup-deny".into(),
        details: match details {
            Value::Object(m) => m,
            _ => unreachable!(),
        },
    }
}

/// The golden entry, sealed in encoding version `v`.
fn golden_entry(v: u32) -> Entry {
    let mut new = sample(0);
    new.uid = UNSET_ID;
    new.login_user = "unset".into();
    new.target = "caf\u{e9}/\"q\"\n\u{1}\u{7f}".into();
    let mut entry = Entry::seal(1, GENESIS_PREV_HASH.to_string(), new).expect("seal golden entry");
    entry.v = v;
    entry.hash = compute_hash(&entry).expect("hash");
    entry
}

#[test]
fn new_entries_are_sealed_in_the_current_version() {
    let entry = Entry::seal(1, GENESIS_PREV_HASH.into(), sample(1)).expect("seal");
    assert_eq!(entry.v, ENCODING_VERSION);
    assert_eq!(ENCODING_VERSION, 2);
}

#[test]
fn golden_v1_encoding_and_hash() {
    let entry = golden_entry(1);
    let canonical = String::from_utf8(canonical_bytes(&entry).expect("encode")).expect("utf8");
    let expected = concat!(
        r#"{"action":"connect4","agent":"coder-1","decision":"deny","#,
        r#""details":{"args":["curl","-s","http://127.0.0.1:8080/"],"cgroup_id":4242,"#,
        r#""flags":{"dry_run":true,"hold":false},"port":8080,"proto":"tcp"},"#,
        r#""exe":"/usr/bin/curl","kind":"decision","login_user":"unset","loginuid":1000,"#,
        r#""method":"cgroup-deny","owner":"alice@example.com","pid":31337,"#,
        r#""policy_snapshot":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
        r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""rule_id":"net.allow.localhost","seq":1,"#,
        "\"target\":\"caf\u{e9}/\\\"q\\\"\\n\\u0001\u{7f}\",",
        r#""ts_ns":1767225600000000000,"uid":4294967295,"user":"alice","v":1}"#,
    );
    assert_eq!(canonical, expected);
    assert_eq!(
        entry.hash,
        "84fd56e6b03f13fc925c95138952ac8fc6c7feff2bf835d97762685f4eedf009"
    );
}

/// Bytes and hash from the README's independent Python implementation
/// of version 2, on the same entry at seq 2 after a non-zero hash, with
/// a 200-byte target (a two-byte varint length).
#[test]
fn golden_v2_encoding_and_hash() {
    let mut entry = golden_entry(2);
    entry.seq = 2;
    entry.prev_hash = "00ff".repeat(16);
    entry.target.push_str(&"x".repeat(200 - entry.target.len()));
    let bytes = canonical_bytes(&entry).expect("encode");
    assert_eq!(hex::encode(&bytes), GOLDEN_V2_HEX);
    assert_eq!(compute_hash(&entry).expect("hash"), GOLDEN_V2_HASH);
}

const GOLDEN_V2_HEX: &str = concat!(
    "086465636973696f6e07636f6465722d3111616c696365406578616d706c652e636f6d05616c6963",
    "6505756e736574ffffffff000003e80d2f7573722f62696e2f6375726c4039663836643038313838",
    "34633764363539613266656161306335356164303135613362663466316232623062383232636431",
    "35643663313562306630306130380b6367726f75702d64656e79136e65742e616c6c6f772e6c6f63",
    "616c686f737408636f6e6e656374340464656e7900007a69c801636166c3a92f2271220a017f7878",
    "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "78787878787878787878787878787878787878787878787878787878787878787878787878787878",
    "787878787878787878787878787878787878787878787878787880017b2261726773223a5b226375",
    "726c222c222d73222c22687474703a2f2f3132372e302e302e313a383038302f225d2c226367726f",
    "75705f6964223a343234322c22666c616773223a7b226472795f72756e223a747275652c22686f6c",
    "64223a66616c73657d2c22706f7274223a383038302c2270726f746f223a22746370227d18867251",
    "edfa0000000000000000000200ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
    "00ff00ff",
);
const GOLDEN_V2_HASH: &str = "70bc7d5293e89ab47002c09e073a9758f349842abb02bde7b3445b711dc03040";

#[test]
fn unknown_versions_are_refused() {
    for v in [0, 3] {
        let mut entry = golden_entry(2);
        entry.v = v;
        let err = compute_hash(&entry).expect_err("unknown version");
        assert!(
            matches!(err, RecordError::UnknownVersion { seq: 1, v: found } if found == v),
            "{err}"
        );
    }
}

#[test]
fn entries_without_v_deserialize_as_version_1() {
    let mut json = serde_json::to_value(golden_entry(1)).expect("serialize");
    json.as_object_mut().expect("object").remove("v");
    let entry: Entry = serde_json::from_value(json).expect("deserialize");
    assert_eq!(entry.v, 1);
    assert_eq!(compute_hash(&entry).expect("hash"), entry.hash);
}

#[test]
fn details_key_order_does_not_matter() {
    let a: Map<String, Value> =
        serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":1,"p":2}],"x":true}}"#).expect("json");
    let b: Map<String, Value> =
        serde_json::from_str(r#"{"a":{"x":true,"y":[1,{"p":2,"q":1}]},"b":1}"#).expect("json");
    let mut out_a = Vec::new();
    let mut out_b = Vec::new();
    write_canonical_details(&a, &mut out_a).expect("encode a");
    write_canonical_details(&b, &mut out_b).expect("encode b");
    assert_eq!(out_a, out_b);
    assert_eq!(out_a, br#"{"a":{"x":true,"y":[1,{"p":2,"q":1}]},"b":1}"#);

    let mut new_a = sample(1);
    new_a.details = a;
    let mut new_b = sample(1);
    new_b.details = b;
    let ea = Entry::seal(1, GENESIS_PREV_HASH.into(), new_a).expect("seal a");
    let eb = Entry::seal(1, GENESIS_PREV_HASH.into(), new_b).expect("seal b");
    assert_eq!(ea.hash, eb.hash);
}

#[test]
fn floats_and_nulls_are_rejected() {
    for bad in [json!({"x": {"deep": [1, 1.5]}}), json!({"x": null})] {
        let mut new = sample(1);
        new.details = bad.as_object().expect("object").clone();
        let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("must reject");
        assert!(
            matches!(&err, RecordError::UnsupportedDetail { key, .. } if key == "x"),
            "{err}"
        );
    }
}

#[test]
fn big_integers_are_kept_exactly() {
    let mut details = Map::new();
    details.insert("max".into(), json!(u64::MAX));
    details.insert("min".into(), json!(i64::MIN));
    let mut out = Vec::new();
    write_canonical_details(&details, &mut out).expect("encode");
    assert_eq!(
        out,
        br#"{"max":18446744073709551615,"min":-9223372036854775808}"#
    );
}

#[test]
fn empty_required_fields_are_rejected() {
    type FieldOf = fn(&mut NewEntry) -> &mut String;
    let fields: [(&str, FieldOf); 12] = [
        ("kind", |e| &mut e.kind),
        ("agent", |e| &mut e.agent),
        ("owner", |e| &mut e.owner),
        ("user", |e| &mut e.user),
        ("login_user", |e| &mut e.login_user),
        ("exe", |e| &mut e.exe),
        ("action", |e| &mut e.action),
        ("target", |e| &mut e.target),
        ("decision", |e| &mut e.decision),
        ("rule_id", |e| &mut e.rule_id),
        ("policy_snapshot", |e| &mut e.policy_snapshot),
        ("method", |e| &mut e.method),
    ];
    for (name, field) in fields {
        let mut new = sample(1);
        field(&mut new).clear();
        let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err(name);
        assert!(
            matches!(err, RecordError::EmptyField { field } if field == name),
            "{name}"
        );
    }
}

#[test]
fn bad_kind_snapshot_seq_and_prev_hash_are_rejected() {
    let mut new = sample(1);
    new.kind = "decisions".into();
    let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("kind");
    assert!(matches!(err, RecordError::UnknownKind { .. }));

    let mut new = sample(1);
    new.policy_snapshot = "sha256:abc".into();
    let err = Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect_err("snapshot");
    assert!(matches!(err, RecordError::BadPolicySnapshot { .. }));

    let mut new = sample(1);
    new.policy_snapshot = NO_POLICY.into();
    Entry::seal(1, GENESIS_PREV_HASH.into(), new).expect("\"none\" is a valid snapshot");

    let err = Entry::seal(0, GENESIS_PREV_HASH.into(), sample(1)).expect_err("seq 0");
    assert!(matches!(err, RecordError::ZeroSeq));

    let err = Entry::seal(
        2,
        GENESIS_PREV_HASH.to_uppercase().replace('0', "A"),
        sample(1),
    )
    .expect_err("prev hash");
    assert!(matches!(err, RecordError::BadPrevHash { seq: 2, .. }));
}

#[test]
fn canonical_bytes_v1_are_compact_valid_json() {
    let entry = golden_entry(1);
    let bytes = canonical_bytes(&entry).expect("encode");
    let parsed: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    let obj = parsed.as_object().expect("object");
    assert_eq!(obj.len(), 20);
    assert!(!obj.contains_key("hash"));
    assert_eq!(obj["v"], json!(1));
    assert!(!bytes.contains(&b' '));
}

#[test]
fn json_strings_are_written_as_serde_json_writes_them() {
    let mut cases: Vec<String> = [
        "",
        "plain ascii 127.0.0.1:8443/tcp",
        "quote \" inside",
        "\"",
        "back\\slash",
        "\\",
        "/usr/bin/\u{7f}",
        "caf\u{e9}",
        "\u{1F600} emoji",
        "tab\tnew\nline\r",
        "a\u{0}b",
        "ends with control\u{1f}",
        "\u{2028}\u{2029}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cases.extend((0u8..0x80).map(|b| format!("x{}y", char::from(b))));
    // Every position of a special byte in and around vector-sized blocks.
    for special in ["\"", "\\", "\u{1}", "\u{e9}"] {
        cases.extend(
            (0..70).map(|at| format!("{}{special}{}", "a".repeat(at), "b".repeat(69 - at))),
        );
    }
    cases.push("a".repeat(1000) + "\"");
    for case in &cases {
        let mut ours = b"prefix".to_vec();
        write_json_str(&mut ours, case.as_bytes()).expect("valid UTF-8");
        let mut theirs = b"prefix".to_vec();
        serde_json::to_writer(&mut theirs, case).expect("serde_json");
        assert_eq!(ours, theirs, "{case:?}");
    }
    for bad in [&b"\xff"[..], b"ok\xc3", b"\xed\xa0\x80", b"\"\xfe"] {
        assert!(write_json_str(&mut Vec::new(), bad).is_none(), "{bad:?}");
    }
}

#[test]
fn hash_ignores_stored_hash_and_covers_every_field() {
    type Edit = fn(&mut Entry);
    let edits: [Edit; 19] = [
        |e| e.seq += 1,
        |e| e.ts_ns += 1,
        |e| e.kind = "hold".into(),
        |e| e.agent.push('x'),
        |e| e.owner.push('x'),
        |e| e.uid ^= 1,
        |e| e.loginuid ^= 1,
        |e| e.user.push('x'),
        |e| e.login_user.push('x'),
        |e| e.pid += 1,
        |e| e.exe.push('x'),
        |e| e.action.push('x'),
        |e| e.target.push('x'),
        |e| e.decision.push('x'),
        |e| e.rule_id.push('x'),
        |e| e.policy_snapshot = NO_POLICY.into(),
        |e| e.method.push('x'),
        |e| {
            e.details.insert("extra".into(), json!(1));
        },
        |e| e.prev_hash = "1".repeat(64),
    ];
    for v in ENCODING_VERSIONS {
        let entry = golden_entry(v);
        let mut other = entry.clone();
        other.hash = "f".repeat(64);
        assert_eq!(compute_hash(&other).expect("hash"), entry.hash, "v{v}");
        for (i, edit) in edits.iter().enumerate() {
            let mut other = entry.clone();
            edit(&mut other);
            assert_ne!(
                compute_hash(&other).expect("hash"),
                entry.hash,
                "v{v} edit {i}"
            );
        }
        // Moving bytes from one string to the next changes the hash.
        let mut other = entry.clone();
        other.kind.push_str(&other.agent[..1]);
        other.agent.remove(0);
        assert_ne!(
            compute_hash(&other).expect("hash"),
            entry.hash,
            "v{v} shift"
        );
    }
}
