//! Support of the `auth` target: a second, independent implementation of the control-plane MAC
//! (written from `docs/control-plane.md`, "Authentication", and checked against the values in
//! `rfaas/src/auth/tests.rs`), and the target's structured input with an encoder for the seeds.

use hmac::{Hmac, Mac};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use rfaas::auth::{MAX_PRE_AUTH_MESSAGE, MIN_SECRET_LEN};
use rfaas::wire::AuthService;
use sha2::Sha256;

/// A nonce, or a MAC tag (both 32 bytes).
pub type Bytes32 = [u8; 32];

// -------------------------------------------------------------------------------------------
// The MAC

/// Which way a sealed message goes (its MAC's direction label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client (label `client`).
    ToServer,
    /// From the server (label `server`).
    ToClient,
}

impl Dir {
    /// The other direction.
    pub fn flip(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// The other service.
pub fn other(service: AuthService) -> AuthService {
    match service {
        AuthService::Lease => AuthService::Registry,
        AuthService::Registry => AuthService::Lease,
    }
}

/// What a tag binds besides the body and the counter: key, service and both nonces.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The HMAC key.
    pub key: Vec<u8>,
    /// The service.
    pub service: AuthService,
    /// The client's nonce.
    pub nc: Bytes32,
    /// The server's nonce.
    pub ns: Bytes32,
}

impl Binding {
    /// `tag(dir, seq, body)` of the documentation: HMAC-SHA256 over `"rfaas-auth-v1" 0 service 0
    /// dir 0 Nc Ns seq(u64 le) body`.
    pub fn tag(&self, dir: Dir, seq: u64, body: &[u8]) -> Bytes32 {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        let dir: &[u8] = match dir {
            Dir::ToServer => b"client",
            Dir::ToClient => b"server",
        };
        for field in [b"rfaas-auth-v1", self.service.as_str().as_bytes(), dir] {
            m.update(field);
            m.update(&[0]);
        }
        m.update(&self.nc);
        m.update(&self.ns);
        m.update(&seq.to_le_bytes());
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// A sealed message: its tag, then `body`.
    pub fn seal(&self, dir: Dir, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut v = self.tag(dir, seq, body).to_vec();
        v.extend_from_slice(body);
        v
    }
}

/// Asserts that [`Binding::tag`] gives the tags `rfaas/src/auth/tests.rs` holds (computed with
/// Python's `hmac` module), so the oracle is not just the code under test again.
pub fn check_oracle() {
    let b = |service| Binding {
        key: b"0123456789abcdef".to_vec(),
        service,
        nc: [1; 32],
        ns: [2; 32],
    };
    assert_eq!(
        hex(&b(AuthService::Lease).tag(Dir::ToServer, 0, br#"{"cores":1}"#)),
        "97ac8dade9bc6f944965b89c71090e4cdaee3d71777bc81659e354f3c2cc31a5"
    );
    assert_eq!(
        hex(&b(AuthService::Registry).tag(Dir::ToClient, 0, b"")),
        "498325dfc4e017772cc5d92c7eca44d11acfd47684c8db99efb089bcfc1a1fb9"
    );
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from exactly 64 hex digits of either case.
pub fn unhex32(s: &str) -> Option<Bytes32> {
    let s = s.as_bytes();
    if s.len() != 64 || !s.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// `u32` little-endian length, then `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

// -------------------------------------------------------------------------------------------
// The input

/// A key, relative to the one the target configures ("right").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChoice {
    /// The right key.
    Right,
    /// The right key with bit 0 of byte `i % len` flipped (never an equivalent HMAC key).
    Flipped(u8),
    /// Any bytes (may happen to be the right key, or an equivalent one).
    Other(Vec<u8>),
}

/// A nonce of a MAC the target computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceChoice {
    /// The one the peer under test sent or was sent (zeros if there is none yet).
    Peer,
    /// These bytes.
    Given(Bytes32),
}

/// A frame body padded with spaces (JSON whitespace) to a length, if it is shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    /// As it is.
    None,
    /// To the pre-authentication bound less one.
    BelowBound,
    /// To the pre-authentication bound exactly.
    AtBound,
    /// To one byte past the pre-authentication bound.
    AboveBound,
    /// To this length.
    To(u16),
}

impl Pad {
    /// The length to pad to.
    pub fn target(self) -> Option<usize> {
        match self {
            Pad::None => None,
            Pad::BelowBound => Some(MAX_PRE_AUTH_MESSAGE - 1),
            Pad::AtBound => Some(MAX_PRE_AUTH_MESSAGE),
            Pad::AboveBound => Some(MAX_PRE_AUTH_MESSAGE + 1),
            Pad::To(n) => Some(n.into()),
        }
    }
}

/// A nonce as it is written into a hello or a challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonceText {
    /// 64 lowercase hex digits.
    Lower(Bytes32),
    /// 64 uppercase hex digits.
    Upper(Bytes32),
    /// Any text (lossy UTF-8 of the bytes).
    Text(Vec<u8>),
}

/// How a hello or challenge object is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A JSON object with the message's fields.
    Object,
    /// The object with one more field, `"extra":0`.
    ExtraField,
    /// The object followed by `x`.
    TrailingJunk,
    /// The fields' values as a JSON array.
    Array,
}

/// A MAC the target computes with its own implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacSpec {
    /// The key.
    pub key: KeyChoice,
    /// The other service than the one under test.
    pub other_service: bool,
    /// The direction opposite to the frame's.
    pub reflected: bool,
    /// The message counter (a genuine request and proof have 0).
    pub seq: u64,
    /// The client's nonce.
    pub nc: NonceChoice,
    /// The server's nonce.
    pub ns: NonceChoice,
}

impl MacSpec {
    /// The spec of a genuine first message: right key, service, direction, counter 0, the
    /// peers' nonces.
    pub const GENUINE: MacSpec = MacSpec {
        key: KeyChoice::Right,
        other_service: false,
        reflected: false,
        seq: 0,
        nc: NonceChoice::Peer,
        ns: NonceChoice::Peer,
    };
}

/// The proof of a challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The hex of a tag over an empty body.
    Mac(MacSpec),
    /// The hex of these bytes.
    Bytes(Bytes32),
    /// Any text.
    Text(Vec<u8>),
}

/// One piece of what the peer of the code under test sends, rendered when the code under test
/// reads past what came before (so a MAC can use the nonces exchanged so far).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// These bytes.
    Raw(Vec<u8>),
    /// A frame of these bytes.
    Frame(Vec<u8>, Pad),
    /// This length prefix, then these bytes (however many the length says).
    Length(u32, Vec<u8>),
    /// A hello frame.
    Hello {
        /// `rfaas_auth`.
        protocol: u32,
        /// `service`: 0 the one under test, 1 the other, else `"bogus"`.
        service: u8,
        /// `nonce`.
        nonce: NonceText,
        /// How it is written.
        shape: Shape,
        /// Spaces after it.
        pad: Pad,
    },
    /// A sealed frame: a tag, then the body (padded).
    Sealed {
        /// Its MAC.
        mac: MacSpec,
        /// Its body.
        body: Vec<u8>,
        /// Spaces after the body (the MAC covers them), to a whole frame body of this length.
        pad: Pad,
    },
    /// A challenge frame.
    Challenge {
        /// `nonce` (its bytes are the server nonce of a `Peer` choice in the proof).
        nonce: NonceText,
        /// `proof`.
        proof: Proof,
        /// How it is written.
        shape: Shape,
        /// Spaces after it.
        pad: Pad,
    },
    /// A plain refusal frame of a manager, `{"refused":TEXT}`.
    Refusal(Vec<u8>),
    /// An i/o error instead of more bytes: `TimedOut`, `WouldBlock`, `ConnectionReset`
    /// (the stream ends there), or `Interrupted` (once; the stream goes on).
    Fail(u8),
}

/// Server side and client side: the configuration, and what the peer sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The code under test has the secret (always so on the client side).
    pub secret: bool,
    /// Reads return one byte at a time.
    pub short_reads: bool,
    /// The service is the registry (else leases).
    pub registry: bool,
    /// The right key (at least 16 bytes).
    pub key: Vec<u8>,
    /// What the peer sends, in order.
    pub script: Vec<Chunk>,
}

/// A change to a sealed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Flip bit `bit % 8` of byte `at % len`.
    Flip {
        /// Byte.
        at: u16,
        /// Bit.
        bit: u8,
    },
    /// Keep the first `n` bytes.
    Truncate(u16),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Keep the tag, replace the body.
    Body(Vec<u8>),
    /// Keep the body, replace the tag.
    Tag(Bytes32),
}

/// A frame built with the oracle for the receiver's next counter, with one thing wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// The other service.
    OtherService,
    /// The key with bit 0 of byte `i % len` flipped.
    OtherKey(u8),
    /// The other direction (what the receiver itself would send).
    Reflected,
    /// The counter plus `1 + n` (wrapping).
    Ahead(u64),
    /// The counter less one (or, at 0, `u64::MAX`).
    Behind,
    /// Another connection: the server nonce with a bit flipped.
    OtherNonce,
    /// The nonces swapped.
    Swapped,
}

/// One step on an established channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A genuine message (through `send_json`/`recv_json` as a JSON string when `json`).
    Send {
        /// To the client (else to the server).
        to_client: bool,
        /// Through the JSON functions.
        json: bool,
        /// The body (or the string's bytes, lossy UTF-8).
        body: Vec<u8>,
    },
    /// A genuine message, changed, then the genuine one.
    Tamper {
        /// To the client.
        to_client: bool,
        /// The body.
        body: Vec<u8>,
        /// The change.
        mutation: Mutation,
    },
    /// An earlier frame of the same direction, `back` (mod the count) from the latest.
    Replay {
        /// To the client.
        to_client: bool,
        /// Which.
        back: u8,
    },
    /// An earlier frame the receiver itself sent.
    Reflect {
        /// To the client.
        to_client: bool,
        /// Which.
        back: u8,
    },
    /// A forged frame.
    Forge {
        /// To the client.
        to_client: bool,
        /// What is wrong.
        forgery: Forgery,
        /// The body.
        body: Vec<u8>,
    },
}

/// Sealed frames: a channel pair established by the real handshake, then steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The service is the registry (else leases).
    pub registry: bool,
    /// The key (at least 16 bytes).
    pub key: Vec<u8>,
    /// The body of the client's sealed request.
    pub request: Vec<u8>,
    /// The steps.
    pub ops: Vec<Op>,
}

/// A whole input of the `auth` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes to `auth::accept`.
    Server(Peer),
    /// Frames on an established channel.
    Sealed(Session),
    /// Answers to `Channel::connect`.
    Client(Peer),
}

/// At most this many chunks or steps.
pub const MAX_STEPS: usize = 32;

fn blob(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let n = usize::from(u.arbitrary::<u16>()?).min(u.len());
    Ok(u.bytes(n)?.to_vec())
}

fn key(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut k = vec![0; MIN_SECRET_LEN + usize::from(u.arbitrary::<u8>()? % 33)];
    u.fill_buffer(&mut k)?;
    Ok(k)
}

fn bytes32(u: &mut Unstructured<'_>) -> Result<Bytes32> {
    u.arbitrary()
}

fn pad(u: &mut Unstructured<'_>) -> Result<Pad> {
    Ok(match u.arbitrary::<u8>()? % 5 {
        0 => Pad::None,
        1 => Pad::BelowBound,
        2 => Pad::AtBound,
        3 => Pad::AboveBound,
        _ => Pad::To(u.arbitrary()?),
    })
}

fn nonce_text(u: &mut Unstructured<'_>) -> Result<NonceText> {
    Ok(match u.arbitrary::<u8>()? % 3 {
        0 => NonceText::Lower(bytes32(u)?),
        1 => NonceText::Upper(bytes32(u)?),
        _ => NonceText::Text(blob(u)?),
    })
}

fn shape(u: &mut Unstructured<'_>) -> Result<Shape> {
    Ok(match u.arbitrary::<u8>()? % 4 {
        0 => Shape::Object,
        1 => Shape::ExtraField,
        2 => Shape::TrailingJunk,
        _ => Shape::Array,
    })
}

fn nonce_choice(u: &mut Unstructured<'_>) -> Result<NonceChoice> {
    Ok(if u.arbitrary::<u8>()? % 2 == 0 {
        NonceChoice::Peer
    } else {
        NonceChoice::Given(bytes32(u)?)
    })
}

fn mac_spec(u: &mut Unstructured<'_>) -> Result<MacSpec> {
    let key = match u.arbitrary::<u8>()? % 3 {
        0 => KeyChoice::Right,
        1 => KeyChoice::Flipped(u.arbitrary()?),
        _ => KeyChoice::Other(blob(u)?),
    };
    let flags = u.arbitrary::<u8>()?;
    Ok(MacSpec {
        key,
        other_service: flags & 1 != 0,
        reflected: flags & 2 != 0,
        seq: u.arbitrary()?,
        nc: nonce_choice(u)?,
        ns: nonce_choice(u)?,
    })
}

fn chunk(u: &mut Unstructured<'_>) -> Result<Chunk> {
    Ok(match u.arbitrary::<u8>()? % 8 {
        0 => Chunk::Raw(blob(u)?),
        1 => Chunk::Frame(blob(u)?, pad(u)?),
        2 => Chunk::Length(u.arbitrary()?, blob(u)?),
        3 => Chunk::Hello {
            protocol: u.arbitrary()?,
            service: u.arbitrary()?,
            nonce: nonce_text(u)?,
            shape: shape(u)?,
            pad: pad(u)?,
        },
        4 => Chunk::Sealed {
            mac: mac_spec(u)?,
            body: blob(u)?,
            pad: pad(u)?,
        },
        5 => Chunk::Challenge {
            nonce: nonce_text(u)?,
            proof: match u.arbitrary::<u8>()? % 3 {
                0 => Proof::Mac(mac_spec(u)?),
                1 => Proof::Bytes(bytes32(u)?),
                _ => Proof::Text(blob(u)?),
            },
            shape: shape(u)?,
            pad: pad(u)?,
        },
        6 => Chunk::Refusal(blob(u)?),
        _ => Chunk::Fail(u.arbitrary()?),
    })
}

fn peer(u: &mut Unstructured<'_>) -> Result<Peer> {
    let flags = u.arbitrary::<u8>()?;
    let key = key(u)?;
    let mut script = Vec::new();
    while !u.is_empty() && script.len() < MAX_STEPS {
        script.push(chunk(u)?);
    }
    Ok(Peer {
        secret: flags & 1 != 0,
        short_reads: flags & 2 != 0,
        registry: flags & 4 != 0,
        key,
        script,
    })
}

fn forgery(u: &mut Unstructured<'_>) -> Result<Forgery> {
    Ok(match u.arbitrary::<u8>()? % 7 {
        0 => Forgery::OtherService,
        1 => Forgery::OtherKey(u.arbitrary()?),
        2 => Forgery::Reflected,
        3 => Forgery::Ahead(u.arbitrary()?),
        4 => Forgery::Behind,
        5 => Forgery::OtherNonce,
        _ => Forgery::Swapped,
    })
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    let b = u.arbitrary::<u8>()?;
    let to_client = b & 0x80 != 0;
    Ok(match (b & 0x3f) % 5 {
        0 => Op::Send {
            to_client,
            json: b & 0x40 != 0,
            body: blob(u)?,
        },
        1 => Op::Tamper {
            to_client,
            body: blob(u)?,
            mutation: match u.arbitrary::<u8>()? % 5 {
                0 => Mutation::Flip {
                    at: u.arbitrary()?,
                    bit: u.arbitrary()?,
                },
                1 => Mutation::Truncate(u.arbitrary()?),
                2 => Mutation::Extend(blob(u)?),
                3 => Mutation::Body(blob(u)?),
                _ => Mutation::Tag(bytes32(u)?),
            },
        },
        2 => Op::Replay {
            to_client,
            back: u.arbitrary()?,
        },
        3 => Op::Reflect {
            to_client,
            back: u.arbitrary()?,
        },
        _ => Op::Forge {
            to_client,
            forgery: forgery(u)?,
            body: blob(u)?,
        },
    })
}

impl Input {
    /// Reads an input: byte 0 is the mode (mod 3: server, sealed, client). Server and client:
    /// a flags byte (bit 0 the server has the secret, bit 1 one-byte reads, bit 2 registry),
    /// the key (a byte `n`, then `16 + n % 33` bytes), then chunks (a selector byte mod 8, then
    /// its fields). Sealed: a flags byte (bit 2 registry), the key, the request (`u16` length,
    /// bytes), then steps (a byte: bit 7 to the client, bit 6 JSON, the low 6 bits mod 5 the kind;
    /// then its fields). Integers are little-endian, byte strings a `u16` length and bytes.
    pub fn decode(u: &mut Unstructured<'_>) -> Result<Input> {
        Ok(match u.arbitrary::<u8>()? % 3 {
            0 => Input::Server(peer(u)?),
            1 => {
                let flags = u.arbitrary::<u8>()?;
                let key = key(u)?;
                let request = blob(u)?;
                let mut ops = Vec::new();
                while !u.is_empty() && ops.len() < MAX_STEPS {
                    ops.push(op(u)?);
                }
                Input::Sealed(Session {
                    registry: flags & 4 != 0,
                    key,
                    request,
                    ops,
                })
            }
            _ => Input::Client(peer(u)?),
        })
    }

    /// The bytes [`Input::decode`] reads back as this input (for the seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Input::Server(p) | Input::Client(p) => {
                w.u8(if matches!(self, Input::Server(_)) {
                    0
                } else {
                    2
                });
                w.u8(u8::from(p.secret) | u8::from(p.short_reads) << 1 | u8::from(p.registry) << 2);
                w.key(&p.key);
                for c in &p.script {
                    w.chunk(c);
                }
            }
            Input::Sealed(s) => {
                w.u8(1);
                w.u8(u8::from(s.registry) << 2);
                w.key(&s.key);
                w.blob(&s.request);
                for op in &s.ops {
                    w.op(op);
                }
            }
        }
        w.0
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn blob(&mut self, v: &[u8]) {
        self.bytes(&u16::try_from(v.len()).expect("short blob").to_le_bytes());
        self.bytes(v);
    }
    fn key(&mut self, k: &[u8]) {
        assert!((MIN_SECRET_LEN..=MIN_SECRET_LEN + 32).contains(&k.len()));
        self.u8((k.len() - MIN_SECRET_LEN) as u8);
        self.bytes(k);
    }
    fn pad(&mut self, p: Pad) {
        match p {
            Pad::None => self.u8(0),
            Pad::BelowBound => self.u8(1),
            Pad::AtBound => self.u8(2),
            Pad::AboveBound => self.u8(3),
            Pad::To(n) => {
                self.u8(4);
                self.bytes(&n.to_le_bytes());
            }
        }
    }
    fn nonce_text(&mut self, n: &NonceText) {
        match n {
            NonceText::Lower(b) => {
                self.u8(0);
                self.bytes(b);
            }
            NonceText::Upper(b) => {
                self.u8(1);
                self.bytes(b);
            }
            NonceText::Text(t) => {
                self.u8(2);
                self.blob(t);
            }
        }
    }
    fn shape(&mut self, s: Shape) {
        self.u8(s as u8);
    }
    fn nonce_choice(&mut self, n: NonceChoice) {
        match n {
            NonceChoice::Peer => self.u8(0),
            NonceChoice::Given(b) => {
                self.u8(1);
                self.bytes(&b);
            }
        }
    }
    fn mac_spec(&mut self, m: &MacSpec) {
        match &m.key {
            KeyChoice::Right => self.u8(0),
            KeyChoice::Flipped(i) => {
                self.u8(1);
                self.u8(*i);
            }
            KeyChoice::Other(k) => {
                self.u8(2);
                self.blob(k);
            }
        }
        self.u8(u8::from(m.other_service) | u8::from(m.reflected) << 1);
        self.bytes(&m.seq.to_le_bytes());
        self.nonce_choice(m.nc);
        self.nonce_choice(m.ns);
    }
    fn chunk(&mut self, c: &Chunk) {
        match c {
            Chunk::Raw(b) => {
                self.u8(0);
                self.blob(b);
            }
            Chunk::Frame(b, p) => {
                self.u8(1);
                self.blob(b);
                self.pad(*p);
            }
            Chunk::Length(n, b) => {
                self.u8(2);
                self.bytes(&n.to_le_bytes());
                self.blob(b);
            }
            Chunk::Hello {
                protocol,
                service,
                nonce,
                shape,
                pad,
            } => {
                self.u8(3);
                self.bytes(&protocol.to_le_bytes());
                self.u8(*service);
                self.nonce_text(nonce);
                self.shape(*shape);
                self.pad(*pad);
            }
            Chunk::Sealed { mac, body, pad } => {
                self.u8(4);
                self.mac_spec(mac);
                self.blob(body);
                self.pad(*pad);
            }
            Chunk::Challenge {
                nonce,
                proof,
                shape,
                pad,
            } => {
                self.u8(5);
                self.nonce_text(nonce);
                match proof {
                    Proof::Mac(m) => {
                        self.u8(0);
                        self.mac_spec(m);
                    }
                    Proof::Bytes(b) => {
                        self.u8(1);
                        self.bytes(b);
                    }
                    Proof::Text(t) => {
                        self.u8(2);
                        self.blob(t);
                    }
                }
                self.shape(*shape);
                self.pad(*pad);
            }
            Chunk::Refusal(t) => {
                self.u8(6);
                self.blob(t);
            }
            Chunk::Fail(k) => {
                self.u8(7);
                self.u8(*k);
            }
        }
    }
    fn op(&mut self, op: &Op) {
        let dir = |to_client: bool| if to_client { 0x80 } else { 0 };
        match op {
            Op::Send {
                to_client,
                json,
                body,
            } => {
                self.u8(dir(*to_client) | if *json { 0x40 } else { 0 });
                self.blob(body);
            }
            Op::Tamper {
                to_client,
                body,
                mutation,
            } => {
                self.u8(dir(*to_client) | 1);
                self.blob(body);
                match mutation {
                    Mutation::Flip { at, bit } => {
                        self.u8(0);
                        self.bytes(&at.to_le_bytes());
                        self.u8(*bit);
                    }
                    Mutation::Truncate(n) => {
                        self.u8(1);
                        self.bytes(&n.to_le_bytes());
                    }
                    Mutation::Extend(b) => {
                        self.u8(2);
                        self.blob(b);
                    }
                    Mutation::Body(b) => {
                        self.u8(3);
                        self.blob(b);
                    }
                    Mutation::Tag(t) => {
                        self.u8(4);
                        self.bytes(t);
                    }
                }
            }
            Op::Replay { to_client, back } => {
                self.u8(dir(*to_client) | 2);
                self.u8(*back);
            }
            Op::Reflect { to_client, back } => {
                self.u8(dir(*to_client) | 3);
                self.u8(*back);
            }
            Op::Forge {
                to_client,
                forgery,
                body,
            } => {
                self.u8(dir(*to_client) | 4);
                match forgery {
                    Forgery::OtherService => self.u8(0),
                    Forgery::OtherKey(i) => {
                        self.u8(1);
                        self.u8(*i);
                    }
                    Forgery::Reflected => self.u8(2),
                    Forgery::Ahead(n) => {
                        self.u8(3);
                        self.bytes(&n.to_le_bytes());
                    }
                    Forgery::Behind => self.u8(4),
                    Forgery::OtherNonce => self.u8(5),
                    Forgery::Swapped => self.u8(6),
                }
                self.blob(body);
            }
        }
    }
}
