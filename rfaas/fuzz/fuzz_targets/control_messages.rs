//! Every control-plane message (`Welcome`, `Hello`, `Verdict`, `Attach`, `Offer`,
//! `LeaseRequest`, `LeaseReply`,
//! `RegistryRequest`, `RegistryResponse`, and the `NodeInfo`, `NodeStatus`, `FunctionInfo` and
//! `Fabric` inside them) as a length-prefixed JSON frame, read by `recv_json` (TCP sessions,
//! manager, registry) or by `shm::recv_message` over a Unix socket (shared-memory sessions).
//! Reading never panics; it fails on a length above 64 KiB, a short frame, or a body that is
//! not valid JSON of the type; what it accepts re-encodes (`send_json`, `send_message`) to a
//! canonical frame that reads back as an equal value. Structured inputs also build arbitrary
//! values of each type and check value -> frame -> value.
//!
//! Input: byte 0: type (low 4 bits), Unix socket (bit 4), structured (bit 5); the rest is
//! the frame (or the bytes the structured value is built from).

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rfaas::transport::shm::{recv_message, send_message};
use rfaas::transport::{MAX_CONTROL_MESSAGE, TransportError, recv_json, send_json};
use rfaas::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::io::Write;
use std::os::unix::net::UnixStream;

/// Reads one message of `T` from `frame`, through a Unix socket pair or a byte slice.
fn read<T: DeserializeOwned>(frame: &[u8], socket: bool) -> std::result::Result<T, TransportError> {
    if socket {
        let (mut tx, rx) = UnixStream::pair().expect("socketpair");
        tx.write_all(frame).expect("write");
        drop(tx);
        let (v, fds) = recv_message::<T>(&rx)?;
        assert!(fds.is_empty());
        Ok(v)
    } else {
        recv_json(&mut &frame[..])
    }
}

/// Encodes `v` as a frame, through a Unix socket pair or a byte vector.
fn write<T: Serialize>(v: &T, socket: bool) -> Vec<u8> {
    if socket {
        let (tx, mut rx) = UnixStream::pair().expect("socketpair");
        send_message(&tx, v, &[]).expect("send_message");
        drop(tx);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut rx, &mut out).expect("read");
        out
    } else {
        let mut out = Vec::new();
        send_json(&mut out, v).expect("send_json");
        out
    }
}

/// A value read back from its own encoding is equal, and the encoding is canonical.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T, socket: bool) {
    let frame = write(v, socket);
    let body = frame.len() - 4;
    assert_eq!(
        u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
        body
    );
    let back = read::<T>(&frame, socket);
    if body > MAX_CONTROL_MESSAGE {
        // What a peer may send is bounded; an encoding past the bound is refused.
        assert!(back.is_err());
        return;
    }
    let back = back.unwrap_or_else(|e| panic!("{v:?} does not read back: {e}"));
    assert_eq!(&back, v);
    assert_eq!(write(&back, socket), frame, "encoding is not canonical");
}

fn check_frame<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame: &[u8], socket: bool) {
    let got = read::<T>(frame, socket);
    // When reading must fail, whatever the body.
    let whole = frame.len() >= 4 && {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        len <= MAX_CONTROL_MESSAGE && frame.len() - 4 >= len
    };
    match got {
        Ok(v) => {
            assert!(whole, "read a message from a short or oversized frame");
            let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
            let body = &frame[4..4 + len];
            serde_json::from_slice::<serde_json::Value>(body).expect("accepted JSON is valid JSON");
            round_trip(&v, socket);
        }
        Err(TransportError::Protocol(_)) | Err(TransportError::Io(_)) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

// Builders of arbitrary values (the wire types do not derive `Arbitrary`).

fn fabric(u: &mut Unstructured<'_>) -> Result<Fabric> {
    Ok(*u.choose(&[Fabric::Shm, Fabric::Tcp, Fabric::Auto, Fabric::Verbs])?)
}

fn function_info(u: &mut Unstructured<'_>) -> Result<FunctionInfo> {
    Ok(FunctionInfo {
        index: u.arbitrary()?,
        name: u.arbitrary()?,
        fingerprint: u.arbitrary()?,
    })
}

fn node_info(u: &mut Unstructured<'_>) -> Result<NodeInfo> {
    Ok(NodeInfo {
        id: u.arbitrary()?,
        address: u.arbitrary()?,
        cores: u.arbitrary()?,
        memory_mib: u.arbitrary()?,
        rdma: u.arbitrary()?,
    })
}

fn node_status(u: &mut Unstructured<'_>) -> Result<NodeStatus> {
    Ok(NodeStatus {
        info: node_info(u)?,
        free_cores: u.arbitrary()?,
        free_memory_mib: u.arbitrary()?,
        age_ms: u.arbitrary()?,
    })
}

fn many<T>(u: &mut Unstructured<'_>, f: fn(&mut Unstructured<'_>) -> Result<T>) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| f(u)).collect()
}

fn welcome(u: &mut Unstructured<'_>) -> Result<Welcome> {
    Ok(Welcome {
        protocol: u.arbitrary()?,
        abi_version: u.arbitrary()?,
        functions: many(u, function_info)?,
        workers: u.arbitrary()?,
        slots: u.arbitrary()?,
        slot_size: u.arbitrary()?,
        data: u.arbitrary()?,
    })
}

fn hello(u: &mut Unstructured<'_>) -> Result<Hello> {
    Ok(Hello {
        protocol: u.arbitrary()?,
        result_len: u.arbitrary()?,
        token: u.arbitrary()?,
    })
}

fn verdict(u: &mut Unstructured<'_>) -> Result<Verdict> {
    Ok(if u.arbitrary()? {
        Verdict::Accepted
    } else {
        Verdict::Refused(u.arbitrary()?)
    })
}

fn attach(u: &mut Unstructured<'_>) -> Result<Attach> {
    Ok(Attach {
        token: u.arbitrary()?,
    })
}

fn offer(u: &mut Unstructured<'_>) -> Result<Offer> {
    Ok(Offer {
        regions: u.arbitrary()?,
        control: u.arbitrary()?,
    })
}

fn lease_request(u: &mut Unstructured<'_>) -> Result<LeaseRequest> {
    Ok(LeaseRequest {
        cores: u.arbitrary()?,
        memory_mib: u.arbitrary()?,
        hot_timeout_us: u.arbitrary()?,
        fabric: fabric(u)?,
        package_sha256: u.arbitrary()?,
        package_len: u.arbitrary()?,
        slots: u.arbitrary()?,
        slot_size: u.arbitrary()?,
        heartbeat_ms: u.arbitrary()?,
    })
}

fn lease_reply(u: &mut Unstructured<'_>) -> Result<LeaseReply> {
    Ok(match u.int_in_range(0..=2)? {
        0 => LeaseReply::Granted {
            lease_id: u.arbitrary()?,
            endpoint: u.arbitrary()?,
            fabric: fabric(u)?,
            token: u.arbitrary()?,
        },
        1 => LeaseReply::NeedPackage,
        _ => LeaseReply::Refused(u.arbitrary()?),
    })
}

fn registry_request(u: &mut Unstructured<'_>) -> Result<RegistryRequest> {
    Ok(match u.int_in_range(0..=3)? {
        0 => RegistryRequest::Register(node_info(u)?),
        1 => RegistryRequest::Heartbeat {
            id: u.arbitrary()?,
            address: u.arbitrary()?,
            free_cores: u.arbitrary()?,
            free_memory_mib: u.arbitrary()?,
        },
        2 => RegistryRequest::Deregister { id: u.arbitrary()? },
        _ => RegistryRequest::List,
    })
}

fn registry_response(u: &mut Unstructured<'_>) -> Result<RegistryResponse> {
    Ok(match u.int_in_range(0..=2)? {
        0 => RegistryResponse::Ok,
        1 => RegistryResponse::Nodes(many(u, node_status)?),
        _ => RegistryResponse::Error(u.arbitrary()?),
    })
}

fn one<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    rest: &[u8],
    socket: bool,
    structured: bool,
    build: fn(&mut Unstructured<'_>) -> Result<T>,
) {
    if structured {
        if let Ok(v) = build(&mut Unstructured::new(rest)) {
            round_trip(&v, socket);
        }
    } else {
        check_frame::<T>(rest, socket);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b0, rest)) = data.split_first() else {
        return;
    };
    let (socket, structured) = (b0 & 0x10 != 0, b0 & 0x20 != 0);
    match b0 & 0x0f {
        0 => one(rest, socket, structured, welcome),
        1 => one(rest, socket, structured, hello),
        2 => one(rest, socket, structured, offer),
        3 => one(rest, socket, structured, lease_request),
        4 => one(rest, socket, structured, lease_reply),
        5 => one(rest, socket, structured, registry_request),
        6 => one(rest, socket, structured, registry_response),
        7 => one(rest, socket, structured, node_info),
        8 => one(rest, socket, structured, node_status),
        9 => one(rest, socket, structured, function_info),
        10 => one(rest, socket, structured, verdict),
        11 => one(rest, socket, structured, attach),
        _ => one(rest, socket, structured, fabric),
    }
});
