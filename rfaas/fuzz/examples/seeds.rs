//! Writes the seed corpus of the fuzz targets (`rfaas/fuzz/seeds/<target>/`): valid encodings
//! of every example function's call, invocations of them, frames of every control message,
//! authentication exchanges (genuine, and each way of getting them wrong).
//! Run from `rfaas/fuzz/` with `cargo run --example seeds` after changing a layout.

use functions_example as fx;
use rfaas::wire::*;
use rfaas::{Placement, RemoteCall};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// An encoded input and the output length of its result.
type Encoding = (Vec<u8>, usize);

fn encode<C: RemoteCall>(call: &C) -> Encoding {
    let layout = call.layout(&Placement::NONE).unwrap();
    let mut buf = vec![0; layout.input_len];
    let e = call.encode(&mut buf, &Placement::NONE).unwrap();
    (buf, e.output_len)
}

fn frame(v: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    rfaas::transport::send_json(&mut out, v).unwrap();
    out
}

fn main() {
    let x = [1.0, 2.0, 3.0, 4.0];
    let (mut o1, mut o2) = ([0.0; 4], [0.0; 4]);
    let mut bytes = [0u8; 8];
    let mut prices = [0.0f32; 2];
    let options = [fx::OptionData {
        spot: 100.0,
        strike: 95.0,
        rate: 0.05,
        volatility: 0.2,
        time: 1.0,
        kind: 0,
    }; 2];
    // (name, manifest index, (encoded input, output length))
    let calls: Vec<(&str, u32, Encoding)> = vec![
        ("axpy", 0, encode(&fx::axpy::call(2.0, &x, &x, &mut o1))),
        (
            "black_scholes",
            1,
            encode(&fx::black_scholes::call(&options, &mut prices)),
        ),
        ("echo", 2, encode(&fx::echo::call(b"hello", &mut bytes))),
        ("fault", 3, encode(&fx::fault::call(1, 7))),
        ("matmul", 4, encode(&fx::matmul::call(2, &x, &x, &mut o1))),
        ("noop", 5, encode(&fx::noop::call())),
        (
            "parse_decimal",
            6,
            encode(&fx::parse_decimal::call(b"12345")),
        ),
        ("sincos", 7, encode(&fx::sincos::call(&x, &mut o1, &mut o2))),
    ];
    for (name, index, (input, out_len)) in &calls {
        // trampolines: function, capacity (8-byte units, then low bits and flags), fill, input.
        let cap = out_len + 64;
        let mut t = vec![*index as u8, (cap >> 3) as u8, (cap & 7) as u8, 0];
        t.extend_from_slice(input);
        write("trampolines", name, &t);
        // invocation: slot 1, header, input.
        let h = InvocationHeader {
            id: (100 + index).into(),
            function: (*index).into(),
            input_len: (input.len() as u32).into(),
            result_offset: 2048.into(),
            result_cap: 512.into(),
            flags: 0.into(),
        };
        let mut v = vec![1u8];
        v.extend_from_slice(zerocopy::IntoBytes::as_bytes(&h));
        v.extend_from_slice(input);
        write("invocation", name, &v);
        // client_decode: function, status Ok, 4 elements, an output of the right size.
        let mut d = vec![*index as u8, 0, 4];
        d.extend(std::iter::repeat_n(0x3f, out_len + 8));
        write("client_decode", name, &d);
    }

    let welcome = Welcome {
        protocol: SESSION_PROTOCOL,
        abi_version: ABI_VERSION,
        functions: vec![FunctionInfo {
            index: 0,
            name: "axpy".into(),
            fingerprint: 42,
        }],
        workers: 2,
        slots: 8,
        slot_size: 4096,
        data: Some("127.0.0.1:7000".into()),
    };
    let node = NodeInfo {
        id: "n1".into(),
        address: "10.0.0.1:7100".into(),
        cores: 8,
        memory_mib: 1024,
        rdma: true,
    };
    let messages: Vec<(u8, &str, Vec<u8>)> = vec![
        (0, "welcome", frame(&welcome)),
        (
            1,
            "hello",
            frame(&Hello {
                protocol: 2,
                result_len: 65536,
                token: Some("0f".repeat(32)),
            }),
        ),
        (
            10,
            "verdict",
            frame(&Verdict::Refused("wrong token".into())),
        ),
        (
            11,
            "attach",
            frame(&Attach {
                token: Some("0f".repeat(32)),
            }),
        ),
        (
            2,
            "offer",
            frame(&Offer {
                regions: vec![(1, 4096), (2, 8192)],
                control: true,
            }),
        ),
        (
            3,
            "lease_request",
            frame(&LeaseRequest {
                cores: 2,
                memory_mib: 512,
                hot_timeout_us: -1,
                fabric: Fabric::Auto,
                package_sha256: "ab".repeat(32),
                package_len: Some(1000),
                slots: Some(8),
                slot_size: None,
                heartbeat_ms: Some(100),
            }),
        ),
        (
            4,
            "lease_reply",
            frame(&LeaseReply::Granted {
                lease_id: 3,
                endpoint: "/tmp/x.sock".into(),
                fabric: Fabric::Shm,
                token: Some("0f".repeat(32)),
            }),
        ),
        (
            5,
            "registry_request",
            frame(&RegistryRequest::Heartbeat {
                id: "n1".into(),
                address: Some("127.0.0.1:7800".into()),
                free_cores: 3,
                free_memory_mib: 100,
            }),
        ),
        (
            5,
            "registry_request_register",
            frame(&RegistryRequest::Register(node.clone())),
        ),
        (
            6,
            "registry_response",
            frame(&RegistryResponse::Nodes(vec![NodeStatus {
                info: node.clone(),
                free_cores: 1,
                free_memory_mib: 2,
                age_ms: 3,
            }])),
        ),
        (7, "node_info", frame(&node)),
        (10, "fabric", frame(&Fabric::Verbs)),
    ];
    for (kind, name, f) in messages {
        let mut v = vec![kind];
        v.extend_from_slice(&f);
        write("control_messages", name, &v);
        v[0] |= 0x10;
        write("control_messages", &format!("{name}-socket"), &v);
    }

    // tcp_frames: the fixed offer, then two frames into regions 1 and 4.
    let mut s = vec![0u8];
    for (key, off, data, imm) in [(1u32, 8u64, &b"payload!"[..], 7u32), (4, 0, &b"xy"[..], 9)] {
        s.extend_from_slice(&key.to_le_bytes());
        s.extend_from_slice(&off.to_le_bytes());
        s.extend_from_slice(&(data.len() as u32).to_le_bytes());
        s.extend_from_slice(&imm.to_le_bytes());
        s.extend_from_slice(data);
    }
    write("tcp_frames", "two-frames", &s);

    auth_seeds();
}

/// Seeds of the `auth` target, each checked to decode back to itself.
fn auth_seeds() {
    use rfaas_fuzz::auth::*;
    let key = b"the cluster secret, 32 bytes ok!".to_vec();
    let request = br#"{"cores":1,"package_sha256":"ab"}"#.to_vec();
    let hello = |shape, protocol, service, nonce| Chunk::Hello {
        protocol,
        service,
        nonce,
        shape,
        pad: Pad::None,
    };
    let good_hello = hello(Shape::Object, 1, 0, NonceText::Lower([7; 32]));
    let sealed = |mac: MacSpec, pad| Chunk::Sealed {
        mac,
        body: request.clone(),
        pad,
    };
    let genuine = sealed(MacSpec::GENUINE, Pad::None);
    let wrong = |f: fn(&mut MacSpec)| {
        let mut m = MacSpec::GENUINE;
        f(&mut m);
        m
    };
    let peer = |secret, registry, script: Vec<Chunk>| Peer {
        secret,
        short_reads: false,
        registry,
        key: key.clone(),
        script,
    };
    let plain = Chunk::Frame(request.clone(), Pad::None);
    let mut short = peer(true, false, vec![good_hello.clone(), genuine.clone()]);
    short.short_reads = true;
    let servers: Vec<(&str, Peer)> = vec![
        (
            "authenticated",
            peer(true, false, vec![good_hello.clone(), genuine.clone()]),
        ),
        (
            "authenticated-registry",
            peer(true, true, vec![good_hello.clone(), genuine.clone()]),
        ),
        ("authenticated-short-reads", short),
        (
            "authenticated-uppercase",
            peer(
                true,
                false,
                vec![
                    hello(Shape::Object, 1, 0, NonceText::Upper([0xab; 32])),
                    genuine.clone(),
                ],
            ),
        ),
        ("open", peer(false, false, vec![plain.clone()])),
        ("required", peer(true, false, vec![plain.clone()])),
        (
            "not-configured",
            peer(false, false, vec![good_hello.clone()]),
        ),
        (
            "hello-protocol-2",
            peer(
                true,
                false,
                vec![hello(Shape::Object, 2, 0, NonceText::Lower([7; 32]))],
            ),
        ),
        (
            "hello-other-service",
            peer(
                true,
                false,
                vec![hello(Shape::Object, 1, 1, NonceText::Lower([7; 32]))],
            ),
        ),
        (
            "hello-bad-nonce",
            peer(
                true,
                false,
                vec![hello(Shape::Object, 1, 0, NonceText::Text(b"xyz".to_vec()))],
            ),
        ),
        (
            "hello-extra-field",
            peer(
                true,
                false,
                vec![hello(Shape::ExtraField, 1, 0, NonceText::Lower([7; 32]))],
            ),
        ),
        (
            "hello-array",
            peer(
                true,
                false,
                vec![hello(Shape::Array, 1, 0, NonceText::Lower([7; 32]))],
            ),
        ),
        (
            "request-wrong-key",
            peer(
                true,
                false,
                vec![
                    good_hello.clone(),
                    sealed(wrong(|m| m.key = KeyChoice::Flipped(3)), Pad::None),
                ],
            ),
        ),
        (
            "request-other-service",
            peer(
                true,
                false,
                vec![
                    good_hello.clone(),
                    sealed(wrong(|m| m.other_service = true), Pad::None),
                ],
            ),
        ),
        (
            "request-reflected",
            peer(
                true,
                false,
                vec![
                    good_hello.clone(),
                    sealed(wrong(|m| m.reflected = true), Pad::None),
                ],
            ),
        ),
        (
            "request-counter-1",
            peer(
                true,
                false,
                vec![good_hello.clone(), sealed(wrong(|m| m.seq = 1), Pad::None)],
            ),
        ),
        (
            "request-other-connection",
            peer(
                true,
                false,
                vec![
                    good_hello.clone(),
                    sealed(wrong(|m| m.ns = NonceChoice::Given([3; 32])), Pad::None),
                ],
            ),
        ),
        (
            "request-at-bound",
            peer(
                true,
                false,
                vec![good_hello.clone(), sealed(MacSpec::GENUINE, Pad::AtBound)],
            ),
        ),
        (
            "request-above-bound",
            peer(
                true,
                false,
                vec![
                    good_hello.clone(),
                    sealed(MacSpec::GENUINE, Pad::AboveBound),
                ],
            ),
        ),
        (
            "hello-at-bound",
            peer(
                true,
                false,
                vec![
                    Chunk::Hello {
                        protocol: 1,
                        service: 0,
                        nonce: NonceText::Lower([7; 32]),
                        shape: Shape::Object,
                        pad: Pad::AtBound,
                    },
                    genuine.clone(),
                ],
            ),
        ),
        (
            "length-above-bound",
            peer(true, false, vec![Chunk::Length(65537, b"{}".to_vec())]),
        ),
        (
            "open-above-bound",
            peer(
                false,
                false,
                vec![Chunk::Frame(request.clone(), Pad::AboveBound)],
            ),
        ),
        (
            "cut-after-hello",
            peer(true, false, vec![good_hello.clone(), Chunk::Fail(0)]),
        ),
        (
            "interrupted",
            peer(
                true,
                false,
                vec![good_hello.clone(), Chunk::Fail(3), genuine.clone()],
            ),
        ),
    ];
    let challenge = |nonce, proof, shape| Chunk::Challenge {
        nonce,
        proof,
        shape,
        pad: Pad::None,
    };
    let good = Proof::Mac(MacSpec::GENUINE);
    let clients: Vec<(&str, Peer)> = vec![
        (
            "connected",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    good.clone(),
                    Shape::Object,
                )],
            ),
        ),
        (
            "connected-registry",
            peer(
                true,
                true,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    good.clone(),
                    Shape::Object,
                )],
            ),
        ),
        (
            "connected-uppercase",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Upper([9; 32]),
                    good.clone(),
                    Shape::Object,
                )],
            ),
        ),
        (
            "connected-array",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    good.clone(),
                    Shape::Array,
                )],
            ),
        ),
        (
            "proof-wrong-key",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    Proof::Mac(wrong(|m| m.key = KeyChoice::Flipped(0))),
                    Shape::Object,
                )],
            ),
        ),
        (
            "proof-reflected",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    Proof::Mac(wrong(|m| m.reflected = true)),
                    Shape::Object,
                )],
            ),
        ),
        (
            "proof-random",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    Proof::Bytes([5; 32]),
                    Shape::Object,
                )],
            ),
        ),
        (
            "challenge-extra-field",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Lower([9; 32]),
                    good.clone(),
                    Shape::ExtraField,
                )],
            ),
        ),
        (
            "challenge-bad-nonce",
            peer(
                true,
                false,
                vec![challenge(
                    NonceText::Text(b"00".to_vec()),
                    good.clone(),
                    Shape::Object,
                )],
            ),
        ),
        (
            "refused",
            peer(
                true,
                false,
                vec![Chunk::Refusal(
                    b"this manager has no secret_file configured".to_vec(),
                )],
            ),
        ),
        (
            "length-above-limit",
            peer(true, false, vec![Chunk::Length((16 << 20) + 1, Vec::new())]),
        ),
        (
            "cut",
            peer(true, false, vec![Chunk::Raw(vec![10, 0, 0, 0, b'{'])]),
        ),
    ];
    let session = |registry, ops| Session {
        registry,
        key: key.clone(),
        request: request.clone(),
        ops,
    };
    let body = b"{\"granted\":1}".to_vec();
    let sends = vec![
        Op::Send {
            to_client: true,
            json: false,
            body: body.clone(),
        },
        Op::Send {
            to_client: false,
            json: false,
            body: b"heartbeat".to_vec(),
        },
        Op::Send {
            to_client: true,
            json: true,
            body: b"need_package".to_vec(),
        },
        Op::Send {
            to_client: false,
            json: true,
            body: Vec::new(),
        },
    ];
    let tampers = [
        Mutation::Flip { at: 0, bit: 7 },
        Mutation::Flip { at: 40, bit: 0 },
        Mutation::Truncate(31),
        Mutation::Truncate(33),
        Mutation::Extend(b" ".to_vec()),
        Mutation::Body(b"{}".to_vec()),
        Mutation::Tag([0; 32]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, mutation)| Op::Tamper {
        to_client: i % 2 == 0,
        body: body.clone(),
        mutation,
    })
    .collect();
    let replays = vec![
        Op::Send {
            to_client: true,
            json: false,
            body: body.clone(),
        },
        Op::Send {
            to_client: false,
            json: false,
            body: body.clone(),
        },
        Op::Replay {
            to_client: true,
            back: 0,
        },
        Op::Replay {
            to_client: true,
            back: 1,
        },
        Op::Replay {
            to_client: false,
            back: 0,
        },
        Op::Reflect {
            to_client: true,
            back: 0,
        },
        Op::Reflect {
            to_client: false,
            back: 1,
        },
    ];
    let forgeries = [
        Forgery::OtherService,
        Forgery::OtherKey(5),
        Forgery::Reflected,
        Forgery::Ahead(0),
        Forgery::Ahead(1 << 32),
        Forgery::Behind,
        Forgery::OtherNonce,
        Forgery::Swapped,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, forgery)| Op::Forge {
        to_client: i % 2 == 1,
        forgery,
        body: body.clone(),
    })
    .collect();
    let sessions: Vec<(&str, Session)> = vec![
        ("sealed-send", session(false, sends)),
        (
            "sealed-send-registry",
            session(
                true,
                vec![Op::Send {
                    to_client: true,
                    json: true,
                    body: b"ok".to_vec(),
                }],
            ),
        ),
        ("sealed-tamper", session(false, tampers)),
        ("sealed-replay-reflect", session(false, replays)),
        ("sealed-forge", session(true, forgeries)),
    ];
    let inputs = servers
        .into_iter()
        .map(|(n, p)| (format!("server-{n}"), Input::Server(p)))
        .chain(
            clients
                .into_iter()
                .map(|(n, p)| (format!("client-{n}"), Input::Client(p))),
        )
        .chain(
            sessions
                .into_iter()
                .map(|(n, s)| (n.to_owned(), Input::Sealed(s))),
        );
    for (name, input) in inputs {
        let bytes = input.encode();
        let back = Input::decode(&mut libfuzzer_sys::arbitrary::Unstructured::new(&bytes));
        assert_eq!(
            back.as_ref().ok(),
            Some(&input),
            "{name} does not decode to itself"
        );
        write("auth", &name, &bytes);
    }
}
