#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use super::*;
use meshwire_proto::wire::Operation;

fn id(b: u8) -> NodeId {
    NodeId::from_bytes([b; 16])
}

fn parse(text: &str) -> Result<Permissions, PermissionsError> {
    Permissions::parse(text, "perms.toml")
}

fn subject(s: &str) -> Subject {
    Subject::pattern(s).unwrap()
}

/// The example of the module docs, with real ids.
fn example() -> Permissions {
    parse(&format!(
        r#"
[groups]
ops = ["{a}", "{b}"]

[nodes."{a}"]
publish   = {{ allow = ["orders.>"], deny = ["orders.secret.>"] }}
subscribe = {{ allow = ["orders.*"] }}
serve     = {{ allow = ["Calculator"] }}
call      = {{ allow = ["*"], deny = ["Admin"] }}

[nodes."group:ops"]
subscribe = {{ allow = ["ops.>"] }}
call      = {{ allow = ["Admin"] }}

[nodes."*"]
publish = {{ allow = ["status.>"] }}
"#,
        a = id(1),
        b = id(2)
    ))
    .unwrap()
}

#[test]
fn publish_allow_and_deny_wins() {
    let r = example().rules_for(id(1));
    assert!(r.check_publish(&subject("orders.eu")).is_ok());
    assert!(r.check_publish(&subject("orders.eu.created")).is_ok());
    let d = r.check_publish(&subject("orders.secret.x")).unwrap_err();
    assert_eq!(d.op, Operation::Publish);
    assert_eq!(d.by.as_deref(), Some("orders.secret.>"));
    let d = r.check_publish(&subject("payments.x")).unwrap_err();
    assert_eq!(d.by, None);
    // From the "*" entry.
    assert!(r.check_publish(&subject("status.up")).is_ok());
}

#[test]
fn subscribe_needs_cover_and_no_overlapping_deny() {
    let r = example().rules_for(id(1));
    assert!(r.check_subscribe(&subject("orders.eu")).is_ok());
    assert!(r.check_subscribe(&subject("orders.*")).is_ok());
    // orders.> could receive orders.a.b, which orders.* does not allow.
    assert!(r.check_subscribe(&subject("orders.>")).is_err());
    // From group ops.
    assert!(r.check_subscribe(&subject("ops.>")).is_ok());
    // Its own inbox, always; another node's, never by default.
    assert!(r
        .check_subscribe(&subject(&format!("_INBOX.{}.>", id(1))))
        .is_ok());
    assert!(r
        .check_subscribe(&subject(&format!("_INBOX.{}.>", id(2))))
        .is_err());

    // A deny that overlaps refuses the whole subscription.
    let p = parse(&format!(
        "[nodes.\"{}\"]\nsubscribe = {{ allow = [\">\"], deny = [\"*.secret\"] }}",
        id(3)
    ))
    .unwrap();
    let r = p.rules_for(id(3));
    assert!(r.check_subscribe(&subject("orders.eu")).is_ok());
    let d = r.check_subscribe(&subject("orders.*")).unwrap_err();
    assert_eq!(d.by.as_deref(), Some("*.secret"));
    assert!(r.check_subscribe(&subject(">")).is_err());
}

#[test]
fn serve_and_call_govern_rpc_subjects() {
    let p = example();
    let a = p.rules_for(id(1));
    let me = id(1).to_string();
    // Serving Calculator: its instance subject, probes, heartbeats.
    assert!(a
        .check_subscribe(&subject(&format!("_RPC.Calculator.{me}")))
        .is_ok());
    assert!(a.check_subscribe(&subject("_RPC.PROBE.Calculator")).is_ok());
    assert!(a.check_publish(&subject("_RPC.HB.Calculator")).is_ok());
    assert!(a.check_publish(&subject("_RPC.HB.Other")).is_err());
    // Calling anything but Admin (group ops allows Admin, but deny wins).
    assert!(a.check_subscribe(&subject("_RPC.HB.Other")).is_ok());
    assert!(a.check_publish(&subject("_RPC.PROBE.Other")).is_ok());
    assert!(a.check_publish(&subject("_RPC.Other.xyz")).is_ok());
    let d = a.check_publish(&subject("_RPC.Admin.xyz")).unwrap_err();
    assert_eq!((d.op, d.name.as_str()), (Operation::Call, "Admin"));
    assert_eq!(d.by.as_deref(), Some("Admin"));
    // Replies may always be sent.
    assert!(a.check_publish(&subject("_INBOX.someone.3")).is_ok());

    // b is in ops only (and "*"): may call Admin, serve nothing.
    let b = p.rules_for(id(2));
    assert!(b.check_publish(&subject("_RPC.Admin.xyz")).is_ok());
    assert!(b.check_publish(&subject("_RPC.Other.xyz")).is_err());
    let d = b.check_publish(&subject("_RPC.HB.Calculator")).unwrap_err();
    assert_eq!(d.op, Operation::Serve);
    assert!(b
        .check_subscribe(&subject(&format!("_RPC.Calculator.{}", id(2))))
        .is_err());
}

#[test]
fn a_node_without_an_entry_may_do_nothing_but_what_everyone_may() {
    let p = example();
    let r = p.rules_for(id(9));
    assert!(r.check_publish(&subject("status.up")).is_ok());
    assert!(r.check_publish(&subject("orders.eu")).is_err());
    assert!(r.check_subscribe(&subject("status.>")).is_err());
    assert!(r.check_publish(&subject("_RPC.PROBE.X")).is_err());

    let empty = parse("").unwrap();
    let r = empty.rules_for(id(9));
    assert!(r.check_publish(&subject("a")).is_err());
    assert!(r
        .check_subscribe(&subject(&format!("_INBOX.{}.>", id(9))))
        .is_ok());
}

#[test]
fn grants_are_the_union_without_duplicates() {
    let p = parse(&format!(
        "[groups]\ng = [\"{a}\"]\n[nodes.\"{a}\"]\npublish = {{ allow = [\"x\", \"y\"] }}\n\
         [nodes.\"group:g\"]\npublish = {{ allow = [\"y\", \"z\"], deny = [\"w\"] }}\n",
        a = id(1)
    ))
    .unwrap();
    let g = p.grants_for(id(1));
    let allow: Vec<&str> = g.ops[0].allow.iter().map(|s| s.as_str()).collect();
    assert_eq!(allow, ["x", "y", "z"]);
    assert_eq!(g.ops[0].deny, [subject("w")]);
    assert_eq!(p.grants_for(id(2)), Grants::default());
}

fn error(text: &str) -> String {
    let e = parse(text).unwrap_err();
    e.to_string()
}

#[test]
fn errors_name_the_line_and_what_to_write() {
    let a = id(1);
    // Unknown key.
    let e = error(&format!(
        "[nodes.\"{a}\"]\npublish = {{ alow = [\"x\"] }}\n"
    ));
    assert!(e.starts_with("perms.toml:2:"), "{e}");
    assert!(e.contains("alow") && e.contains("allow"), "{e}");
    let e = error("[node]\n");
    assert!(e.starts_with("perms.toml:1:"), "{e}");
    assert!(e.contains("nodes"), "{e}");
    let e = error(&format!("[nodes.\"{a}\"]\nreceive = {{}}\n"));
    assert!(
        e.starts_with("perms.toml:2:") && e.contains("subscribe"),
        "{e}"
    );
    // Not TOML.
    let e = error("[nodes\n");
    assert!(e.starts_with("perms.toml:1:"), "{e}");
    // A bad node id, in a key and in a group.
    let e = error("\n[nodes.\"bob\"]\n");
    assert!(
        e.starts_with("perms.toml:2:") && e.contains("\"bob\""),
        "{e}"
    );
    assert!(e.contains("group:NAME"), "{e}");
    let e = error("[groups]\nops = [\n  \"bob\",\n]\n");
    assert!(
        e.starts_with("perms.toml:3:") && e.contains("node id"),
        "{e}"
    );
    assert!(matches!(
        parse("[groups]\nops = [\"bob\"]").unwrap_err(),
        PermissionsError::BadNodeId { in_group: true, .. }
    ));
    // An unknown group.
    let e = error("[groups]\nops = []\n[nodes.\"group:dev\"]\n");
    assert!(e.starts_with("perms.toml:3:"), "{e}");
    assert!(e.contains("dev = [") && e.contains("[groups]"), "{e}");
    let e = error("[groups]\n\"a b\" = []\n");
    assert!(e.contains("not a valid group name"), "{e}");
    // Bad patterns.
    let e = error(&format!(
        "[nodes.\"{a}\"]\npublish = {{ allow = [\n\"ok\",\n\"a.>.b\"] }}\n"
    ));
    assert!(e.starts_with("perms.toml:4:") && e.contains("a.>.b"), "{e}");
    assert!(e.contains("publish pattern"), "{e}");
    let e = error(&format!(
        "[nodes.\"{a}\"]\ncall = {{ deny = [\"Admin.x\"] }}\n"
    ));
    assert!(e.contains("one token") && e.contains("call pattern"), "{e}");
    let e = error(&format!(
        "[nodes.\"{a}\"]\npublish = {{ allow = [\"\"] }}\n"
    ));
    assert!(e.starts_with("perms.toml:2:"), "{e}");
    // Wrong types.
    let e = error(&format!("[nodes.\"{a}\"]\npublish = {{ allow = \"x\" }}\n"));
    assert!(e.starts_with("perms.toml:2:"), "{e}");
}

#[test]
fn load_reports_a_missing_file() {
    let e = Permissions::load("/nonexistent/perms.toml").unwrap_err();
    assert!(matches!(e, PermissionsError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/perms.toml"));
}

#[test]
fn too_many_patterns_are_refused() {
    let many: Vec<String> = (0..30_000).map(|i| format!("\"topic.{i}\"")).collect();
    let e = parse(&format!(
        "[nodes.\"*\"]\npublish = {{ allow = [{}] }}\n",
        many.join(",")
    ))
    .unwrap_err();
    assert!(matches!(e, PermissionsError::TooLarge { .. }), "{e}");
}
