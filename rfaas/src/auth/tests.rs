//! Unit tests of the secret checks, the MAC layout and the handshake over a socket pair.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

fn secret(text: &str) -> Secret {
    Secret::from_bytes(text.as_bytes()).expect("a long enough secret")
}

/// A channel of `service` with fixed nonces, as the `client` or the server.
fn channel(s: &Secret, service: AuthService, client: bool) -> Channel {
    Channel {
        secret: s.clone(),
        service,
        client,
        client_nonce: [1; NONCE_LEN],
        server_nonce: [2; NONCE_LEN],
        sent: 0,
        received: 0,
        refusal: no_refusal,
    }
}

#[test]
fn mac_layout_matches_the_documented_bytes() {
    // Expected tags computed independently (Python's hmac module) over the layout in
    // docs/control-plane.md: label NUL service NUL direction NUL cnonce snonce seq-le64 body.
    let s = secret("0123456789abcdef");
    let mut client = channel(&s, AuthService::Lease, true);
    let sealed = client.seal(br#"{"cores":1}"#);
    assert_eq!(
        to_hex(&sealed[..TAG_LEN]),
        "97ac8dade9bc6f944965b89c71090e4cdaee3d71777bc81659e354f3c2cc31a5"
    );
    assert_eq!(&sealed[TAG_LEN..], br#"{"cores":1}"#);
    let mut server = channel(&s, AuthService::Registry, false);
    assert_eq!(
        to_hex(&server.seal(b"")),
        "498325dfc4e017772cc5d92c7eca44d11acfd47684c8db99efb089bcfc1a1fb9"
    );
}

/// Opening `frame` on `ch` fails with an authentication error.
#[track_caller]
fn check_rejected(ch: &mut Channel, frame: &[u8]) {
    let before = ch.received;
    match ch.open(frame) {
        Err(AuthError::BadMac(_) | AuthError::BadProof(_)) => {}
        other => panic!("expected a MAC failure, got {other:?}"),
    }
    assert_eq!(ch.received, before, "a failed check consumes no counter");
}

#[test]
fn sealed_messages_open_only_where_they_belong() {
    let s = secret("a shared secret of some length");
    let body = br#"{"cores":2,"package_sha256":"ab"}"#;
    let sealed = channel(&s, AuthService::Lease, true).seal(body);
    // The right peer opens it, once.
    let mut server = channel(&s, AuthService::Lease, false);
    assert_eq!(server.open(&sealed).expect("genuine"), body);
    check_rejected(&mut server, &sealed);
    // Anything else refuses it.
    let mut flipped_body = sealed.clone();
    *flipped_body.last_mut().expect("body") ^= 1;
    let mut flipped_tag = sealed.clone();
    flipped_tag[0] ^= 0x80;
    for frame in [
        &flipped_body[..],
        &flipped_tag,
        &sealed[..TAG_LEN - 1],
        &sealed[..TAG_LEN],
        b"",
    ] {
        check_rejected(&mut channel(&s, AuthService::Lease, false), frame);
    }
    let cases: [(Secret, AuthService, bool, [u8; NONCE_LEN]); 5] = [
        // Another secret.
        (
            secret("another secret, same length!!!"),
            AuthService::Lease,
            false,
            [2; 32],
        ),
        // The other service.
        (s.clone(), AuthService::Registry, false, [2; 32]),
        // The sender itself (a reflected message).
        (s.clone(), AuthService::Lease, true, [2; 32]),
        // Another connection (another server nonce): no replay.
        (s.clone(), AuthService::Lease, false, [3; 32]),
        (s.clone(), AuthService::Lease, false, [0; 32]),
    ];
    for (key, service, client, server_nonce) in cases {
        let mut ch = channel(&key, service, client);
        ch.server_nonce = server_nonce;
        check_rejected(&mut ch, &sealed);
    }
    // Out of order: message 1 does not open as message 0.
    let mut client = channel(&s, AuthService::Lease, true);
    let _first = client.seal(b"one");
    let second = client.seal(b"two");
    check_rejected(&mut channel(&s, AuthService::Lease, false), &second);
}

fn secret_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// Loading `path` fails, saying `words`.
#[track_caller]
fn check_file_refused(path: &Path, words: &str) {
    match Secret::from_file(path) {
        Err(e @ AuthError::SecretFile { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(words), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!("expected a refusal mentioning `{words}`, got {other:?}"),
    }
}

#[test]
fn secret_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("rfaas-auth-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    check_file_refused(&dir.join("missing"), "cannot open");
    check_file_refused(&dir, "not a regular file");
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a NUL-terminated path that outlives the call; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    check_file_refused(&fifo, "not a regular file");
    check_file_refused(&secret_file(&dir, "empty", b"", 0o600), "empty");
    check_file_refused(&secret_file(&dir, "newline", b"\n", 0o600), "empty");
    check_file_refused(
        &secret_file(&dir, "short", b"fifteen bytes!!\n", 0o600),
        "too short",
    );
    let long = vec![b'x'; MAX_SECRET_LEN + 1];
    check_file_refused(&secret_file(&dir, "long", &long, 0o600), "longer than");
    for mode in [0o640, 0o604, 0o620, 0o602, 0o660, 0o644] {
        check_file_refused(
            &secret_file(&dir, "open", b"sixteen bytes!!!", mode),
            "chmod 600",
        );
    }
    // A trailing newline (or CRLF) is not part of the key; the checks pass at 0600 and 0400.
    let plain = secret("sixteen bytes!!!");
    for (name, bytes, mode) in [
        ("exact", &b"sixteen bytes!!!"[..], 0o600),
        ("lf", b"sixteen bytes!!!\n", 0o400),
        ("crlf", b"sixteen bytes!!!\r\n", 0o600),
    ] {
        let loaded = Secret::from_file(&secret_file(&dir, name, bytes, mode)).expect(name);
        let sealed = channel(&plain, AuthService::Lease, true).seal(b"x");
        assert_eq!(
            channel(&loaded, AuthService::Lease, false)
                .open(&sealed)
                .expect(name),
            b"x"
        );
    }
    assert!(matches!(
        Secret::from_bytes(b"fifteen bytes!!"),
        Err(AuthError::SecretTooShort(15))
    ));
    assert_eq!(format!("{plain:?}"), "Secret(..)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hex_round_trips_and_rejects_non_hex() {
    let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
    assert_eq!(from_hex32(&to_hex(&bytes)), Some(bytes));
    assert_eq!(from_hex32(&to_hex(&bytes).to_uppercase()), Some(bytes));
    for bad in [
        String::new(),
        "0".repeat(63),
        "0".repeat(65),
        format!("{}g", "0".repeat(63)),
        format!("{}+1", "0".repeat(62)),
        "é".repeat(32),
    ] {
        assert_eq!(from_hex32(&bad), None, "{bad:?}");
    }
    assert_ne!(
        random_nonce().expect("nonce"),
        random_nonce().expect("nonce")
    );
}

/// Runs `server` on the result of [`accept`] in a thread, and `client` on the other end of a
/// socket pair; returns what both returned.
fn exchange<S: Send + 'static, C>(
    server_secret: Option<Secret>,
    service: AuthService,
    server: impl FnOnce(Result<Accepted, AuthError>, &mut UnixStream) -> S + Send + 'static,
    client: impl FnOnce(&mut UnixStream) -> C,
) -> (S, C) {
    let (mut a, mut b) = UnixStream::pair().expect("pair");
    // Bounded waits: a broken exchange fails the test instead of hanging it.
    let timeout = Some(std::time::Duration::from_secs(20));
    a.set_read_timeout(timeout).expect("timeout");
    b.set_read_timeout(timeout).expect("timeout");
    let server = std::thread::spawn(move || {
        let r = accept(&mut b, server_secret.as_ref(), service);
        server(r, &mut b)
    });
    let c = client(&mut a);
    drop(a);
    (server.join().expect("server thread"), c)
}

fn plain_refusal(frame: &[u8]) -> Option<String> {
    match serde_json::from_slice(frame).ok()? {
        crate::wire::LeaseReply::Refused(why) => Some(why),
        _ => None,
    }
}

/// A server that answers an authenticated request with `granted: REQUEST`, an open one with
/// `open`, and an error with a plain refusal; returns the request or the error's text.
fn serve(r: Result<Accepted, AuthError>, stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    match r {
        Ok(Accepted::Authenticated(mut ch, request)) => {
            let answer = format!("granted: {}", String::from_utf8_lossy(&request));
            ch.send_json(stream, &answer).map_err(|e| e.to_string())?;
            Ok(request)
        }
        Ok(Accepted::Open(request)) => {
            crate::transport::send_json(stream, &"open").map_err(|e| e.to_string())?;
            Ok(request)
        }
        Err(e) => {
            let _ = crate::transport::send_json(
                stream,
                &crate::wire::LeaseReply::Refused(e.to_string()),
            );
            Err(e.to_string())
        }
    }
}

/// A client with `secret` that sends `request` and returns the answer.
fn client(
    secret: &Secret,
    service: AuthService,
    request: &str,
) -> impl FnOnce(&mut UnixStream) -> Result<String, AuthError> {
    move |stream| {
        let mut ch = Channel::connect(stream, secret, service, plain_refusal)?;
        ch.send_json(stream, &request)?;
        ch.recv_json(stream)
    }
}

#[test]
fn handshake_authenticates_both_sides_and_binds_the_request() {
    let s = secret("the cluster secret, 32 bytes ok");
    let (server, answer) = exchange(
        Some(s.clone()),
        AuthService::Lease,
        serve,
        client(&s, AuthService::Lease, "lease please"),
    );
    assert_eq!(server.expect("authenticated"), br#""lease please""#);
    assert_eq!(answer.expect("answer"), r#"granted: "lease please""#);
}

#[test]
fn mismatches_end_in_clear_errors() {
    let s = secret("the cluster secret, 32 bytes ok");
    let other = secret("not the cluster secret at all!!");
    // A client with another secret stops at the server's proof: its request never leaves.
    let (server, answer) = exchange(
        Some(s.clone()),
        AuthService::Lease,
        serve,
        client(&other, AuthService::Lease, "lease please"),
    );
    let err = answer.expect_err("another secret").to_string();
    assert!(
        err.contains("does not prove that it holds our secret"),
        "{err}"
    );
    let err = server.expect_err("no request");
    assert!(err.contains("closed"), "{err}");
    // A client with a secret, a server without one: the client hears why.
    let (server, answer) = exchange(
        None,
        AuthService::Lease,
        serve,
        client(&s, AuthService::Lease, "lease please"),
    );
    assert!(server.expect_err("refused").contains("no secret_file"));
    let err = answer.expect_err("refused").to_string();
    assert!(
        err.contains("did not authenticate") && err.contains("no secret_file configured"),
        "{err}"
    );
    // A client without a secret, a server with one: the plain request is refused unread.
    let (server, answer) = exchange(Some(s.clone()), AuthService::Lease, serve, |stream| {
        crate::transport::send_json(stream, &serde_json::json!({"cores": 1}))?;
        crate::transport::recv_json::<crate::wire::LeaseReply>(stream)
    });
    assert!(server.is_err());
    match answer.expect("a refusal") {
        crate::wire::LeaseReply::Refused(why) => {
            assert!(why.contains("requires authentication"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Neither has a secret: the request passes as it is.
    let (server, answer) = exchange(None, AuthService::Lease, serve, |stream| {
        crate::transport::send_json(stream, &"plain")?;
        crate::transport::recv_json::<String>(stream)
    });
    assert_eq!(server.expect("open"), br#""plain""#);
    assert_eq!(answer.expect("answer"), "open");
    // The wrong service.
    let (_, answer) = exchange(
        Some(s.clone()),
        AuthService::Lease,
        serve,
        client(&s, AuthService::Registry, "list"),
    );
    let err = answer.expect_err("wrong service").to_string();
    assert!(err.contains("but this is a manager"), "{err}");
}

#[test]
fn a_request_with_a_bad_mac_is_refused() {
    let s = secret("the cluster secret, 32 bytes ok");
    let tampered: [fn(&mut Vec<u8>); 3] = [
        |f| f[TAG_LEN + 2] ^= 1,
        |f| f.truncate(TAG_LEN - 1),
        |f| f.iter_mut().for_each(|b| *b = b'x'),
    ];
    for tamper in tampered {
        let (server, answer) = exchange(Some(s.clone()), AuthService::Lease, serve, |stream| {
            let mut ch = Channel::connect(stream, &s, AuthService::Lease, plain_refusal)?;
            let mut frame = ch.seal(br#""lease please""#);
            tamper(&mut frame);
            write_frame(stream, &frame)?;
            ch.recv_json::<String>(stream)
        });
        let err = server.expect_err("bad MAC");
        assert!(err.contains("request's MAC does not match"), "{err}");
        match answer {
            Err(AuthError::Refused { why, .. }) => assert_eq!(why, err),
            other => panic!("expected the server's refusal, got {other:?}"),
        }
    }
    // A malformed hello.
    for hello in [
        r#"{"rfaas_auth":1,"service":"lease","nonce":"xyz"}"#,
        r#"{"rfaas_auth":2,"service":"lease","nonce":"00"}"#,
        r#"{"rfaas_auth":1,"service":"lease"}"#,
    ] {
        let (server, _) = exchange(Some(s.clone()), AuthService::Lease, serve, |stream| {
            write_frame(stream, hello.as_bytes())
        });
        let err = server.expect_err("bad hello");
        assert!(err.contains("bad authentication message"), "{hello}: {err}");
    }
}

/// Without a secret, a plain request is read only up to [`MAX_PRE_AUTH_MESSAGE`], as a hello
/// is with one: a stranger's 16 MiB first message used to be read whole and parsed into a JSON
/// value tree (~280 MB of server memory for one connection). A request at the bound passes.
#[test]
fn an_open_server_reads_a_bounded_plain_request() {
    for (len, passes) in [
        (MAX_PRE_AUTH_MESSAGE, true),
        (MAX_PRE_AUTH_MESSAGE + 1, false),
        (16 << 20, false),
    ] {
        let (server, ()) = exchange(
            None,
            AuthService::Lease,
            |r, stream| {
                let request = match r {
                    Ok(Accepted::Open(request)) => Ok(request),
                    Ok(Accepted::Authenticated(..)) => Err("authenticated?".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                // How much of the body was left unread: none (the client hangs up once it has
                // written), or some of it.
                stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .expect("timeout");
                let mut rest = [0u8; 16];
                let unread = Read::read(stream, &mut rest).unwrap_or(0);
                (request, unread)
            },
            move |stream| {
                // A JSON array of zeros, `len` bytes in all.
                let mut body = vec![b'['];
                while body.len() + 2 < len {
                    body.extend_from_slice(b"0,");
                }
                body.truncate(len - 2);
                body.extend_from_slice(b"0]");
                assert_eq!(body.len(), len);
                Write::write_all(stream, &(len as u32).to_le_bytes()).expect("length");
                // The server may hang up before reading the body.
                let _ = Write::write_all(stream, &body);
            },
        );
        let (request, unread) = server;
        if passes {
            assert_eq!(request.expect("a request at the bound").len(), len);
        } else {
            let e = request.expect_err("an oversized request");
            assert!(e.contains("65536"), "{e}");
            assert!(unread > 0, "the body was read");
        }
    }
}
