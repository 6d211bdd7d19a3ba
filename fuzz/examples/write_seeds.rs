//! Writes the seed corpus for the `frame_decoder` fuzz target into
//! `fuzz/seeds/frame_decoder/`:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//!
//! Each seed is `n | n chunk sizes | encoded frames` (the layout the target
//! reads; see `fuzz_targets/frame_decoder.rs`). Together they cover every
//! frame type and every message kind, so the fuzzer starts from valid
//! encodings instead of having to discover the layout.

use bytes::{Bytes, BytesMut};
use meshwire_proto::wire::{
    Ack, Close, CloseCode, Data, Decoder, Frame, Grants, Hello, Lane, LaneAck, LaneResume, Limits,
    Message, NodeId, OpRules, Operation, Resume, Role, Sack, Subject, Welcome,
};
use std::path::PathBuf;

fn subj(s: &str) -> Subject {
    Subject::pattern(s).expect("valid subject")
}

fn data(lane: Option<Lane>, seq: u64, msg: Message) -> Frame {
    Frame::Data(Data { lane, seq, msg })
}

fn main() -> std::io::Result<()> {
    let a = NodeId::from_bytes([0x11; 16]);
    let b = NodeId::from_bytes([0xa5; 16]);
    let resume = Resume {
        epoch: 0x0123_4567_89ab_cdef,
        lanes: [
            LaneResume {
                recv_next: 1,
                send_base: 1,
            },
            LaneResume {
                recv_next: 7,
                send_base: 3,
            },
        ],
    };
    let seeds: Vec<(&str, Vec<u8>, Vec<Frame>)> = vec![
        (
            "hello",
            vec![],
            vec![Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                node: a,
                role: Role::Client,
                session: Some(subj("app.session")),
                listen: None,
                max_frame: 1 << 20,
            })],
        ),
        (
            "handshake_publish_ack",
            vec![0, 6, 40],
            vec![
                Frame::Welcome(Welcome {
                    version: 1,
                    node: b,
                    role: Role::Router,
                    listen: Some(subj("127.0.0.1:4222")),
                    max_frame: 1 << 20,
                    resume,
                }),
                Frame::Resume(Resume {
                    epoch: 42,
                    ..resume
                }),
                data(
                    Some(Lane::Ordered),
                    1,
                    Message::Publish {
                        subject: subj("orders.eu.created"),
                        reply_to: Some(subj("_inbox.x1")),
                        payload: Bytes::from_static(b"{\"id\":1}"),
                    },
                ),
                Frame::Ack(Ack {
                    lanes: [
                        LaneAck {
                            recv_next: 2,
                            limit: 64,
                            sacks: vec![],
                        },
                        LaneAck {
                            recv_next: 5,
                            limit: 100,
                            sacks: vec![Sack { start: 7, end: 9 }, Sack { start: 12, end: 13 }],
                        },
                    ],
                }),
            ],
        ),
        (
            "messages",
            vec![],
            vec![
                data(
                    Some(Lane::Unordered),
                    9,
                    Message::Forward {
                        subject: subj("orders.eu.created"),
                        reply_to: None,
                        payload: Bytes::from_static(b"payload"),
                        plain: true,
                        groups: vec![subj("workers"), subj("audit")],
                    },
                ),
                data(
                    Some(Lane::Ordered),
                    2,
                    Message::Deliver {
                        sid: 3,
                        subject: subj("orders.eu.created"),
                        reply_to: Some(subj("_inbox.x1")),
                        payload: Bytes::new(),
                    },
                ),
                data(
                    Some(Lane::Ordered),
                    3,
                    Message::Subscribe {
                        sid: 3,
                        pattern: subj("orders.*.created"),
                        group: Some(subj("workers")),
                    },
                ),
                data(Some(Lane::Ordered), 4, Message::Unsubscribe { sid: 3 }),
                data(
                    None,
                    0,
                    Message::Interest {
                        pattern: subj("orders.>"),
                        group: None,
                        add: true,
                    },
                ),
                data(
                    None,
                    0,
                    Message::Peers {
                        routers: vec![(a, subj("10.0.0.1:4222")), (b, subj("10.0.0.2:4222"))],
                    },
                ),
                data(
                    None,
                    0,
                    Message::NoResponders {
                        reply_to: subj("_inbox.x1"),
                    },
                ),
            ],
        ),
        (
            "permissions",
            vec![3, 40],
            vec![
                data(Some(Lane::Ordered), 1, Message::Grants { rules: None }),
                data(
                    Some(Lane::Ordered),
                    2,
                    Message::Grants {
                        rules: Some(Box::new(Grants {
                            ops: [
                                OpRules {
                                    allow: vec![subj("orders.>")],
                                    deny: vec![subj("orders.secret.>")],
                                },
                                OpRules {
                                    allow: vec![subj("orders.*")],
                                    deny: vec![],
                                },
                                OpRules::default(),
                                OpRules {
                                    allow: vec![subj("*")],
                                    deny: vec![subj("Admin")],
                                },
                            ],
                        })),
                    },
                ),
                data(
                    Some(Lane::Ordered),
                    3,
                    Message::Denied {
                        op: Operation::Subscribe,
                        subject: subj("orders.>"),
                        sid: Some(4),
                        reply_to: None,
                    },
                ),
                data(
                    Some(Lane::Ordered),
                    4,
                    Message::Denied {
                        op: Operation::Call,
                        subject: subj("_RPC.Admin.x"),
                        sid: None,
                        reply_to: Some(subj("_INBOX.x.1")),
                    },
                ),
            ],
        ),
        (
            "ping_pong_close",
            vec![1, 2],
            vec![
                Frame::Ping(7),
                Frame::Pong(7),
                Frame::Close(Close {
                    code: CloseCode::SlowConsumer,
                    reason: "consumer too slow: ünïcode".to_owned(),
                }),
            ],
        ),
    ];

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds/frame_decoder");
    std::fs::create_dir_all(&dir)?;
    for (name, chunks, frames) in seeds {
        let mut out = vec![chunks.len() as u8];
        out.extend_from_slice(&chunks);
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        // The seed must be valid: it decodes back to exactly these frames.
        let mut check = buf.clone();
        let mut dec = Decoder::new(Limits::default());
        for f in &frames {
            assert_eq!(dec.decode(&mut check).as_ref(), Ok(&Some(f.clone())));
        }
        assert!(check.is_empty());
        out.extend_from_slice(&buf);
        let path = dir.join(name);
        std::fs::write(&path, &out)?;
        println!("{} ({} bytes)", path.display(), out.len());
    }
    Ok(())
}
