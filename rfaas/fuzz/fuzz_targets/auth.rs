//! The control-plane authentication (`rfaas::auth`) against whatever a peer sends, before and
//! after the handshake. The target computes every MAC it sends with its own implementation of
//! the documented layout (`rfaas_fuzz::auth::Binding`, checked against independently computed
//! tags), so "genuine" never means "what the code under test computes".
//!
//! - **Server** (`auth::accept`, with the secret configured or not): the peer's bytes come
//!   from a script of chunks (raw bytes, frames, bare lengths, hellos, sealed frames computed
//!   when the server reads them, so with the nonces it chose, challenges, refusals, i/o errors),
//!   optionally one byte per read. A model predicts the outcome exactly: the plain request
//!   (open, no secret), `Required`, `NotConfigured`, `Malformed`, `BadMac`, a length refused
//!   (above 64 KiB before authentication, with a secret or without)
//!   with nothing read past the length, or the stream's end; and how many bytes the server
//!   read. With a secret the server writes its challenge only after a valid hello, and its
//!   proof is the documented tag. It authenticates only a request whose tag is the right
//!   secret's over this connection's nonces, counter 0, the client's direction and this
//!   service, within the 64 KiB bound, and that frame must be one the target built; the
//!   channel it returns seals and opens the next messages with the documented tags.
//! - **Sealed frames**: a channel pair established by the real `Channel::connect` and
//!   `auth::accept` over a Unix socket pair (the server in a thread), with the input's secret;
//!   the nonces are read from the transcript. Genuine messages each way round-trip their bodies
//!   exactly and their frames equal the oracle's (through `seal`/`open` and `send_json`/
//!   `recv_json`). Bit flips, truncations, extensions, a replaced body or tag, replays of
//!   earlier frames, reflections of the receiver's own frames, and forgeries for the next
//!   counter with one thing wrong (the other service, key, direction, counter, server nonce, or
//!   swapped nonces) are refused with `BadMac` (server) or `BadProof` (client), and the next
//!   genuine frame still opens (a refusal consumes no counter).
//! - **Client** (`Channel::connect`): it writes exactly the documented hello before reading;
//!   then the answer comes from a script as above. Predicted exactly: a refused length, the
//!   stream's end, `Refused` with the server's words, `Malformed`, `BadProof`, or success,
//!   which needs a proof equal to the right secret's tag (one the target built); the channel
//!   then seals and opens with the documented tags.
//!
//! Input: `rfaas_fuzz::auth::Input::decode` (byte 0: mode mod 3; then flags, key, and chunks
//! or steps).

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use rfaas::auth::{self, Accepted, AuthError, Channel, MAX_PRE_AUTH_MESSAGE, Secret, TAG_LEN};
use rfaas::transport::{MAX_CONTROL_MESSAGE, TransportError};
use rfaas::wire::{AuthChallenge, AuthService, LeaseReply};
use rfaas_fuzz::auth::*;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

fn service(registry: bool) -> AuthService {
    if registry {
        AuthService::Registry
    } else {
        AuthService::Lease
    }
}

fn secret(key: &[u8]) -> Secret {
    Secret::from_bytes(key).expect("keys have 16 bytes or more")
}

/// The client's way of reading a plain refusal: a manager's `{"refused": WHY}`.
fn refusal(frame: &[u8]) -> Option<String> {
    match serde_json::from_slice(frame).ok()? {
        LeaseReply::Refused(why) => Some(why),
        _ => None,
    }
}

/// The body of the first frame in `bytes`, if it is all there.
fn first_frame(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    bytes.get(4..4 + len)
}

/// The `nonce` of the JSON object in the first frame of `bytes`.
fn first_frame_nonce(bytes: &[u8]) -> Option<Bytes32> {
    let v: Value = serde_json::from_slice(first_frame(bytes)?).ok()?;
    unhex32(v.get("nonce")?.as_str()?)
}

// -------------------------------------------------------------------------------------------
// The scripted peer

/// Which side the target plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plays {
    /// The client (the code under test is `accept`).
    Client,
    /// The server (the code under test is `connect`).
    Server,
}

/// A stream whose reads come from a script of chunks, each rendered when the code under test
/// reads past the ones before; writes are kept.
struct Script<'a> {
    plays: Plays,
    key: Vec<u8>,
    service: AuthService,
    chunks: std::slice::Iter<'a, Chunk>,
    short_reads: bool,
    /// Every byte rendered so far.
    stream: Vec<u8>,
    /// How many of them the code under test read.
    taken: usize,
    /// The error that ended the stream, if one did (else it ends at the end of the script).
    end: Option<ErrorKind>,
    written: Vec<u8>,
    /// How much was written when the first read came.
    written_at_first_read: Option<usize>,
    /// Every sealed frame and proof the target computed.
    built: HashSet<Vec<u8>>,
}

fn fail_kind(k: u8) -> ErrorKind {
    match k % 4 {
        0 => ErrorKind::TimedOut,
        1 => ErrorKind::WouldBlock,
        2 => ErrorKind::ConnectionReset,
        _ => ErrorKind::Interrupted,
    }
}

fn nonce_text(n: &NonceText) -> String {
    match n {
        NonceText::Lower(b) => hex(b),
        NonceText::Upper(b) => hex(b).to_uppercase(),
        NonceText::Text(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string encodes")
}

/// A JSON object of `fields` (name, encoded value), written in `shape`.
fn object(fields: &[(&str, String)], shape: Shape) -> Vec<u8> {
    let text = match shape {
        Shape::Array => {
            let values: Vec<_> = fields.iter().map(|(_, v)| v.as_str()).collect();
            format!("[{}]", values.join(","))
        }
        _ => {
            let mut pairs: Vec<_> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            if shape == Shape::ExtraField {
                pairs.push("\"extra\":0".into());
            }
            let junk = if shape == Shape::TrailingJunk {
                "x"
            } else {
                ""
            };
            format!("{{{}}}{junk}", pairs.join(","))
        }
    };
    text.into_bytes()
}

/// `body` with spaces appended until `prefix + body` is `pad`'s length.
fn padded(mut body: Vec<u8>, pad: Pad, prefix: usize) -> Vec<u8> {
    if let Some(n) = pad.target() {
        let n = n.saturating_sub(prefix);
        if body.len() < n {
            body.resize(n, b' ');
        }
    }
    body
}

impl<'a> Script<'a> {
    fn new(plays: Plays, p: &'a Peer) -> Script<'a> {
        Script {
            plays,
            key: p.key.clone(),
            service: service(p.registry),
            chunks: p.script.iter(),
            short_reads: p.short_reads,
            stream: Vec::new(),
            taken: 0,
            end: None,
            written: Vec::new(),
            written_at_first_read: None,
            built: HashSet::new(),
        }
    }

    /// The client's nonce so far: from the hello the client sent.
    fn hello_nonce(&self) -> Option<Bytes32> {
        match self.plays {
            Plays::Client => first_frame_nonce(&self.stream),
            Plays::Server => first_frame_nonce(&self.written),
        }
    }

    /// The server's nonce so far: from the challenge the server under test wrote.
    fn challenge_nonce(&self) -> Option<Bytes32> {
        match self.plays {
            Plays::Client => first_frame_nonce(&self.written),
            Plays::Server => None,
        }
    }

    /// A tag per `spec` for a frame going `dir` (the server nonce `own_ns` if the frame
    /// carries one).
    fn tag(&self, spec: &MacSpec, dir: Dir, body: &[u8], own_ns: Option<Bytes32>) -> Bytes32 {
        let key = match &spec.key {
            KeyChoice::Right => self.key.clone(),
            KeyChoice::Flipped(i) => {
                let mut k = self.key.clone();
                let n = k.len();
                k[usize::from(*i) % n] ^= 1;
                k
            }
            KeyChoice::Other(k) => k.clone(),
        };
        let b = Binding {
            key,
            service: if spec.other_service {
                other(self.service)
            } else {
                self.service
            },
            nc: match spec.nc {
                NonceChoice::Peer => self.hello_nonce().unwrap_or_default(),
                NonceChoice::Given(n) => n,
            },
            ns: match spec.ns {
                NonceChoice::Peer => own_ns.or(self.challenge_nonce()).unwrap_or_default(),
                NonceChoice::Given(n) => n,
            },
        };
        b.tag(
            if spec.reflected { dir.flip() } else { dir },
            spec.seq,
            body,
        )
    }

    fn render(&mut self, chunk: &Chunk) {
        let out = match chunk {
            Chunk::Raw(b) => b.clone(),
            Chunk::Frame(b, pad) => frame(&padded(b.clone(), *pad, 0)),
            Chunk::Length(n, b) => {
                let mut v = n.to_le_bytes().to_vec();
                v.extend_from_slice(b);
                v
            }
            Chunk::Hello {
                protocol,
                service,
                nonce,
                shape,
                pad,
            } => {
                let service = match service {
                    0 => self.service.as_str(),
                    1 => other(self.service).as_str(),
                    _ => "bogus",
                };
                let body = object(
                    &[
                        ("rfaas_auth", protocol.to_string()),
                        ("service", json_str(service)),
                        ("nonce", json_str(&nonce_text(nonce))),
                    ],
                    *shape,
                );
                frame(&padded(body, *pad, 0))
            }
            Chunk::Sealed { mac, body, pad } => {
                let dir = match self.plays {
                    Plays::Client => Dir::ToServer,
                    Plays::Server => Dir::ToClient,
                };
                let body = padded(body.clone(), *pad, TAG_LEN);
                let mut sealed = self.tag(mac, dir, &body, None).to_vec();
                sealed.extend_from_slice(&body);
                self.built.insert(sealed.clone());
                frame(&sealed)
            }
            Chunk::Challenge {
                nonce,
                proof,
                shape,
                pad,
            } => {
                let own_ns = match nonce {
                    NonceText::Lower(b) | NonceText::Upper(b) => Some(*b),
                    NonceText::Text(_) => None,
                };
                let proof = match proof {
                    Proof::Mac(spec) => {
                        let tag = self.tag(spec, Dir::ToClient, b"", own_ns);
                        self.built.insert(tag.to_vec());
                        hex(&tag)
                    }
                    Proof::Bytes(b) => hex(b),
                    Proof::Text(t) => String::from_utf8_lossy(t).into_owned(),
                };
                let body = object(
                    &[
                        ("nonce", json_str(&nonce_text(nonce))),
                        ("proof", json_str(&proof)),
                    ],
                    *shape,
                );
                frame(&padded(body, *pad, 0))
            }
            Chunk::Refusal(t) => {
                let why = String::from_utf8_lossy(t).into_owned();
                frame(&serde_json::to_vec(&LeaseReply::Refused(why)).expect("encodes"))
            }
            Chunk::Fail(_) => unreachable!("failures are not rendered"),
        };
        self.stream.extend_from_slice(&out);
    }

    /// Renders the next chunk; `Err` for an i/o error in its place (`end` is set when that
    /// ends the stream), `Ok(false)` at the end of the script.
    fn advance(&mut self) -> std::io::Result<bool> {
        if let Some(kind) = self.end {
            return Err(kind.into());
        }
        match self.chunks.next() {
            None => Ok(false),
            Some(Chunk::Fail(k)) => {
                let kind = fail_kind(*k);
                if kind != ErrorKind::Interrupted {
                    self.end = Some(kind);
                }
                Err(kind.into())
            }
            Some(chunk) => {
                self.render(chunk);
                Ok(true)
            }
        }
    }

    /// Renders the rest of the script (what the model reads), up to its end or an error that
    /// ends it.
    fn finish(&mut self) {
        loop {
            match self.advance() {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

impl Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.written_at_first_read.get_or_insert(self.written.len());
        while self.taken == self.stream.len() {
            if !self.advance()? {
                return Ok(0);
            }
        }
        let max = if self.short_reads { 1 } else { usize::MAX };
        let n = buf.len().min(self.stream.len() - self.taken).min(max);
        buf[..n].copy_from_slice(&self.stream[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

impl Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// -------------------------------------------------------------------------------------------
// The model

/// What `accept` or `connect` does with an input.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `Accepted::Open` of these bytes.
    Open(Vec<u8>),
    /// `Accepted::Authenticated` with this request.
    Authenticated(Vec<u8>),
    /// `connect` returned a channel.
    Connected,
    /// `AuthError::Refused` with these words.
    Refused(String),
    Required,
    NotConfigured,
    Malformed,
    BadMac,
    BadProof,
    /// A length above the bound (`TransportError::Protocol`).
    TooLong,
    /// The stream ended, or failed, with this error.
    Cut(ErrorKind),
}

fn outcome_of(e: &AuthError, service: AuthService) -> Outcome {
    let _ = e.to_string();
    match e {
        AuthError::Required(s) | AuthError::NotConfigured(s) | AuthError::BadMac(s) => {
            assert_eq!(*s, service, "{e}");
            match e {
                AuthError::Required(_) => Outcome::Required,
                AuthError::NotConfigured(_) => Outcome::NotConfigured,
                _ => Outcome::BadMac,
            }
        }
        AuthError::BadProof(s) => {
            assert_eq!(*s, service, "{e}");
            Outcome::BadProof
        }
        AuthError::Refused { service: s, why } => {
            assert_eq!(*s, service, "{e}");
            Outcome::Refused(why.clone())
        }
        AuthError::Malformed(_) => Outcome::Malformed,
        AuthError::Transport(TransportError::Protocol(m)) => {
            assert!(m.contains("at most"), "{m}");
            Outcome::TooLong
        }
        AuthError::Transport(TransportError::Io(io)) => Outcome::Cut(io.kind()),
        other => panic!("unexpected error: {other:?}"),
    }
}

/// The frames of a byte stream as a reader of `read_frame` sees them.
struct Frames<'a> {
    s: &'a [u8],
    at: usize,
}

enum Stop {
    Cut,
    TooLong,
}

impl<'a> Frames<'a> {
    fn next(&mut self, max: usize) -> Result<&'a [u8], Stop> {
        let rest = &self.s[self.at..];
        let Some(len) = rest.get(..4) else {
            self.at = self.s.len();
            return Err(Stop::Cut);
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        self.at += 4;
        if len > max {
            return Err(Stop::TooLong);
        }
        let Some(body) = rest.get(4..4 + len) else {
            self.at = self.s.len();
            return Err(Stop::Cut);
        };
        self.at += len;
        Ok(body)
    }
}

/// What a server makes of a first frame.
enum Hello {
    /// Not a JSON object with an `rfaas_auth` key: a plain request.
    Plain,
    /// A hello it must refuse.
    Bad,
    /// A valid hello with this client nonce.
    Good(Bytes32),
}

fn classify(frame: &[u8], service: AuthService) -> Hello {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(frame) else {
        return Hello::Plain;
    };
    if !o.contains_key("rfaas_auth") {
        return Hello::Plain;
    }
    let nonce = o.get("nonce").and_then(Value::as_str).and_then(unhex32);
    match nonce {
        Some(n)
            if o.len() == 3
                && o.get("rfaas_auth").and_then(Value::as_u64) == Some(1)
                && o.get("service").and_then(Value::as_str) == Some(service.as_str()) =>
        {
            Hello::Good(n)
        }
        _ => Hello::Bad,
    }
}

/// The server's outcome, the bytes it reads, and the binding of an authenticated channel.
fn server_model(p: &Peer, s: &Script) -> (Outcome, usize, Option<Binding>) {
    let service = service(p.registry);
    let mut r = Frames {
        s: &s.stream,
        at: 0,
    };
    let stop = |e: Stop, r: &Frames| {
        let o = match e {
            Stop::Cut => Outcome::Cut(s.end.unwrap_or(ErrorKind::UnexpectedEof)),
            Stop::TooLong => Outcome::TooLong,
        };
        (o, r.at, None)
    };
    let first = match r.next(MAX_PRE_AUTH_MESSAGE) {
        Ok(f) => f,
        Err(e) => {
            assert!(s.written.is_empty(), "wrote {:?} before a hello", s.written);
            return stop(e, &r);
        }
    };
    let hello = classify(first, service);
    if !(p.secret && matches!(hello, Hello::Good(_))) {
        assert!(
            s.written.is_empty(),
            "wrote {:?} without a valid hello",
            s.written
        );
    }
    let nc = match (p.secret, hello) {
        (false, Hello::Plain) => return (Outcome::Open(first.to_vec()), r.at, None),
        (false, _) => return (Outcome::NotConfigured, r.at, None),
        (true, Hello::Plain) => return (Outcome::Required, r.at, None),
        (true, Hello::Bad) => return (Outcome::Malformed, r.at, None),
        (true, Hello::Good(nc)) => nc,
    };
    // The challenge: exactly one frame, the documented JSON, the documented proof.
    let body = first_frame(&s.written).expect("a challenge after a valid hello");
    assert_eq!(
        body.len() + 4,
        s.written.len(),
        "more than a challenge written"
    );
    let c: AuthChallenge = serde_json::from_slice(body).expect("a challenge");
    let ns = unhex32(&c.nonce).expect("a 32-byte server nonce");
    let b = Binding {
        key: p.key.clone(),
        service,
        nc,
        ns,
    };
    let want = format!(
        r#"{{"nonce":"{}","proof":"{}"}}"#,
        hex(&ns),
        hex(&b.tag(Dir::ToClient, 0, b""))
    );
    assert_eq!(
        String::from_utf8_lossy(body),
        want,
        "the challenge is not the documented one"
    );
    let sealed = match r.next(MAX_PRE_AUTH_MESSAGE) {
        Ok(f) => f,
        Err(e) => return stop(e, &r),
    };
    let genuine =
        sealed.len() >= TAG_LEN && sealed[..TAG_LEN] == b.tag(Dir::ToServer, 0, &sealed[TAG_LEN..]);
    if genuine {
        assert!(
            s.built.contains(sealed),
            "a request the target did not seal has the right tag"
        );
        (
            Outcome::Authenticated(sealed[TAG_LEN..].to_vec()),
            r.at,
            Some(b),
        )
    } else {
        (Outcome::BadMac, r.at, None)
    }
}

/// The client's nonce from its hello, checked against the documented bytes.
fn check_hello(written: &[u8], service: AuthService) -> Bytes32 {
    let body = first_frame(written).expect("a whole hello");
    assert_eq!(body.len() + 4, written.len(), "more than a hello written");
    let nc = first_frame_nonce(written).expect("a hello with a nonce");
    assert_eq!(
        String::from_utf8_lossy(body),
        format!(
            r#"{{"rfaas_auth":1,"service":"{}","nonce":"{}"}}"#,
            service.as_str(),
            hex(&nc)
        ),
        "the hello is not the documented one"
    );
    nc
}

/// The client's outcome, the bytes it reads, and the binding of its channel.
fn client_model(p: &Peer, s: &Script, nc: Bytes32) -> (Outcome, usize, Option<Binding>) {
    let mut r = Frames {
        s: &s.stream,
        at: 0,
    };
    let answer = match r.next(MAX_CONTROL_MESSAGE) {
        Ok(f) => f,
        Err(Stop::Cut) => {
            let end = s.end.unwrap_or(ErrorKind::UnexpectedEof);
            return (Outcome::Cut(end), r.at, None);
        }
        Err(Stop::TooLong) => return (Outcome::TooLong, r.at, None),
    };
    let c: AuthChallenge = match serde_json::from_slice(answer) {
        Ok(c) => c,
        Err(_) => {
            let o = refusal(answer).map_or(Outcome::Malformed, Outcome::Refused);
            return (o, r.at, None);
        }
    };
    let (Some(ns), Some(proof)) = (unhex32(&c.nonce), unhex32(&c.proof)) else {
        return (Outcome::Malformed, r.at, None);
    };
    let b = Binding {
        key: p.key.clone(),
        service: service(p.registry),
        nc,
        ns,
    };
    if proof == b.tag(Dir::ToClient, 0, b"") {
        assert!(
            s.built.contains(proof.as_slice()),
            "a proof the target did not compute is right"
        );
        (Outcome::Connected, r.at, Some(b))
    } else {
        (Outcome::BadProof, r.at, None)
    }
}

/// An established channel seals message `sent` and opens message `received` with `b`'s tags.
fn check_channel(ch: &mut Channel, b: &Binding, client: bool, sent: u64, received: u64) {
    let (out, inc) = if client {
        (Dir::ToServer, Dir::ToClient)
    } else {
        (Dir::ToClient, Dir::ToServer)
    };
    assert_eq!(ch.seal(b"next"), b.seal(out, sent, b"next"));
    let frame = b.seal(inc, received, b"then");
    assert_eq!(ch.open(&frame).expect("the next message"), b"then");
}

// -------------------------------------------------------------------------------------------
// Server and client side

fn server(p: &Peer) {
    let service = service(p.registry);
    let key = secret(&p.key);
    let mut s = Script::new(Plays::Client, p);
    let got = auth::accept(&mut s, p.secret.then_some(&key), service);
    let taken = s.taken;
    s.finish();
    let (want, read, binding) = server_model(p, &s);
    let outcome = match got {
        Ok(Accepted::Open(request)) => Outcome::Open(request),
        Ok(Accepted::Authenticated(mut ch, request)) => {
            let b = binding.as_ref().unwrap_or_else(|| {
                panic!("authenticated {request:?}, the model expected {want:?}")
            });
            check_channel(&mut ch, b, false, 1, 1);
            Outcome::Authenticated(request)
        }
        Err(e) => outcome_of(&e, service),
    };
    assert_eq!(outcome, want);
    assert_eq!(taken, read, "the server read {taken} bytes, not {read}");
}

fn client(p: &Peer) {
    let service = service(p.registry);
    let key = secret(&p.key);
    let mut s = Script::new(Plays::Server, p);
    let got = Channel::connect(&mut s, &key, service, refusal);
    let taken = s.taken;
    s.finish();
    let before = s.written_at_first_read.expect("connect reads an answer");
    assert_eq!(before, s.written.len(), "connect wrote after reading");
    let nc = check_hello(&s.written, service);
    let (want, read, binding) = client_model(p, &s, nc);
    let outcome = match got {
        Ok(mut ch) => {
            let b = binding
                .as_ref()
                .unwrap_or_else(|| panic!("connected, the model expected {want:?}"));
            check_channel(&mut ch, b, true, 0, 1);
            Outcome::Connected
        }
        Err(e) => outcome_of(&e, service),
    };
    assert_eq!(outcome, want);
    assert_eq!(taken, read, "the client read {taken} bytes, not {read}");
}

// -------------------------------------------------------------------------------------------
// Sealed frames on an established channel

type Job = (UnixStream, Secret, AuthService);

/// A thread running `accept` on the sockets it is given.
struct Acceptor {
    jobs: Sender<Job>,
    results: Receiver<Result<Accepted, AuthError>>,
}

fn acceptor() -> &'static Mutex<Acceptor> {
    static A: OnceLock<Mutex<Acceptor>> = OnceLock::new();
    A.get_or_init(|| {
        let (jobs, todo) = channel::<Job>();
        let (done, results) = channel();
        std::thread::spawn(move || {
            for (mut stream, secret, service) in todo {
                if done
                    .send(auth::accept(&mut stream, Some(&secret), service))
                    .is_err()
                {
                    return;
                }
            }
        });
        Mutex::new(Acceptor { jobs, results })
    })
}

/// A stream that keeps what went through it.
struct Tee<'a> {
    inner: &'a mut UnixStream,
    read: Vec<u8>,
    written: Vec<u8>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn index(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

/// Both ends of a channel, the oracle's binding, and per direction the next counter and the
/// frames delivered.
struct Pair {
    client: Channel,
    server: Channel,
    b: Binding,
    next: [u64; 2],
    delivered: [Vec<Vec<u8>>; 2],
}

impl Pair {
    fn sender(&mut self, d: Dir) -> &mut Channel {
        match d {
            Dir::ToServer => &mut self.client,
            Dir::ToClient => &mut self.server,
        }
    }

    fn receiver(&mut self, d: Dir) -> &mut Channel {
        self.sender(d.flip())
    }

    /// Seals `body` on the sender (the frame must be the oracle's).
    fn seal(&mut self, d: Dir, body: &[u8]) -> Vec<u8> {
        let f = self.sender(d).seal(body);
        assert_eq!(f, self.b.seal(d, self.next[index(d)], body), "seal");
        f
    }

    /// The receiver opens a genuine frame.
    fn deliver(&mut self, d: Dir, f: &[u8], body: &[u8]) {
        let got = self.receiver(d).open(f);
        match got {
            Ok(got) => assert_eq!(got, body),
            Err(e) => panic!(
                "genuine message {} going {d:?} refused: {e}",
                self.next[index(d)]
            ),
        }
        self.next[index(d)] += 1;
        self.delivered[index(d)].push(f.to_vec());
    }

    /// The receiver refuses `f`, with the error of its side.
    fn refuse(&mut self, d: Dir, f: &[u8]) {
        let service = self.b.service;
        match self.receiver(d).open(f) {
            Err(AuthError::BadMac(s)) if d == Dir::ToServer && s == service => {}
            Err(AuthError::BadProof(s)) if d == Dir::ToClient && s == service => {}
            other => panic!("{f:?} going {d:?} was not refused: {other:?}"),
        }
    }

    /// The receiver refuses `f`, then opens the next genuine message (no counter consumed).
    fn refuse_then_genuine(&mut self, d: Dir, f: &[u8]) {
        self.refuse(d, f);
        let next = self.seal(d, b"after a refusal");
        self.deliver(d, &next, b"after a refusal");
    }

    fn send_json(&mut self, d: Dir, text: &str) {
        let mut buf = Vec::new();
        self.sender(d)
            .send_json(&mut buf, &text)
            .expect("send_json");
        let json = serde_json::to_vec(text).expect("encodes");
        let sealed = self.b.seal(d, self.next[index(d)], &json);
        assert_eq!(buf, frame(&sealed), "send_json");
        let back: String = self
            .receiver(d)
            .recv_json(&mut &buf[..])
            .unwrap_or_else(|e| panic!("recv_json: {e}"));
        assert_eq!(back, text);
        self.next[index(d)] += 1;
        self.delivered[index(d)].push(sealed);
    }

    fn step(&mut self, op: &Op) {
        let dir = |to_client: bool| {
            if to_client {
                Dir::ToClient
            } else {
                Dir::ToServer
            }
        };
        match op {
            Op::Send {
                to_client,
                json,
                body,
            } => {
                let d = dir(*to_client);
                if *json {
                    self.send_json(d, &String::from_utf8_lossy(body));
                } else {
                    let f = self.seal(d, body);
                    self.deliver(d, &f, body);
                }
            }
            Op::Tamper {
                to_client,
                body,
                mutation,
            } => {
                let d = dir(*to_client);
                let f = self.seal(d, body);
                let mut m = f.clone();
                match mutation {
                    Mutation::Flip { at, bit } => {
                        let n = m.len();
                        m[usize::from(*at) % n] ^= 1 << (bit % 8);
                    }
                    Mutation::Truncate(n) => m.truncate((*n).into()),
                    Mutation::Extend(b) => m.extend_from_slice(b),
                    Mutation::Body(b) => {
                        m.truncate(TAG_LEN);
                        m.extend_from_slice(b);
                    }
                    Mutation::Tag(t) => m[..TAG_LEN].copy_from_slice(t),
                }
                if m != f {
                    self.refuse(d, &m);
                }
                self.deliver(d, &f, body);
            }
            Op::Replay { to_client, back } => {
                let d = dir(*to_client);
                let old = &self.delivered[index(d)];
                let f = old[old.len() - 1 - usize::from(*back) % old.len()].clone();
                self.refuse_then_genuine(d, &f);
            }
            Op::Reflect { to_client, back } => {
                let d = dir(*to_client);
                let own = &self.delivered[index(d.flip())];
                let f = own[own.len() - 1 - usize::from(*back) % own.len()].clone();
                self.refuse_then_genuine(d, &f);
            }
            Op::Forge {
                to_client,
                forgery,
                body,
            } => {
                let d = dir(*to_client);
                let n = self.next[index(d)];
                let mut b = self.b.clone();
                let (mut fd, mut seq) = (d, n);
                match forgery {
                    Forgery::OtherService => b.service = other(b.service),
                    Forgery::OtherKey(i) => {
                        let len = b.key.len();
                        b.key[usize::from(*i) % len] ^= 1;
                    }
                    Forgery::Reflected => fd = d.flip(),
                    Forgery::Ahead(k) => seq = n.wrapping_add(1).wrapping_add(*k),
                    Forgery::Behind => seq = n.wrapping_sub(1),
                    Forgery::OtherNonce => b.ns[0] ^= 1,
                    Forgery::Swapped => (b.nc, b.ns) = (b.ns, b.nc),
                }
                let f = b.seal(fd, seq, body);
                if f == self.b.seal(d, n, body) {
                    // Not a forgery after all (`Ahead(u64::MAX)`): the genuine frame.
                    let sent = self.seal(d, body);
                    assert_eq!(sent, f);
                    self.deliver(d, &f, body);
                } else {
                    self.refuse_then_genuine(d, &f);
                }
            }
        }
    }
}

fn sealed(s: &Session) {
    let service = service(s.registry);
    let key = secret(&s.key);
    let (mut a, b) = UnixStream::pair().expect("socketpair");
    // Bounded waits: a broken exchange fails instead of hanging.
    for end in [&a, &b] {
        end.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    let acceptor = acceptor().lock().expect("acceptor");
    acceptor
        .jobs
        .send((b, key.clone(), service))
        .expect("acceptor thread");
    let mut tee = Tee {
        inner: &mut a,
        read: Vec::new(),
        written: Vec::new(),
    };
    let mut client =
        Channel::connect(&mut tee, &key, service, refusal).expect("handshake, right secret");
    let nc = check_hello(&tee.written, service);
    let c: AuthChallenge =
        serde_json::from_slice(first_frame(&tee.read).expect("a whole challenge"))
            .expect("a challenge");
    let ns = unhex32(&c.nonce).expect("server nonce");
    let proof = unhex32(&c.proof).expect("proof");
    let bind = Binding {
        key: s.key.clone(),
        service,
        nc,
        ns,
    };
    assert_eq!(proof, bind.tag(Dir::ToClient, 0, b""), "proof");
    let request = client.seal(&s.request);
    assert_eq!(request, bind.seal(Dir::ToServer, 0, &s.request), "request");
    auth::write_frame(&mut a, &request).expect("request");
    let server = match acceptor.results.recv().expect("acceptor thread") {
        Ok(Accepted::Authenticated(ch, got)) => {
            assert_eq!(got, s.request);
            ch
        }
        other => panic!("a genuine request was not authenticated: {other:?}"),
    };
    drop(acceptor);
    let mut pair = Pair {
        client,
        server,
        b: bind,
        next: [1, 1],
        delivered: [vec![request], vec![proof.to_vec()]],
    };
    for op in &s.ops {
        pair.step(op);
    }
}

fuzz_target!(|data: &[u8]| {
    static ORACLE: Once = Once::new();
    ORACLE.call_once(check_oracle);
    let Ok(input) = Input::decode(&mut Unstructured::new(data)) else {
        return;
    };
    match &input {
        Input::Server(p) => server(p),
        Input::Sealed(s) => sealed(s),
        Input::Client(p) => client(p),
    }
});
