//! Control-plane authentication: a shared secret read from a file, and the HMAC-SHA256
//! challenge-response that a manager or the registry runs with each client when it has one.
//!
//! The exchange (byte by byte in `docs/control-plane.md`): the client opens with an
//! [`AuthHello`] carrying its nonce; the server answers an [`AuthChallenge`] with its own nonce
//! and a proof that it holds the secret; from then on every message is *sealed*: a 32-byte tag
//! followed by the plain JSON body, the tag being HMAC-SHA256 over a domain-separation label,
//! the service, the direction, both nonces, a per-direction counter and the body. The request
//! is therefore bound to this connection (no replay) and to its bytes (no swapping); nothing is
//! encrypted.
//!
//! Without a secret on either side the control plane stays open and plain, as before. A side
//! with a secret never falls back to the open protocol: a mismatch ends in a clear error.

use crate::transport::{MAX_CONTROL_MESSAGE, TransportError};
use crate::wire::{AUTH_PROTOCOL, AuthChallenge, AuthHello, AuthService};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of each nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of each MAC tag (HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// The shortest secret accepted, bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest secret file accepted, bytes.
pub const MAX_SECRET_LEN: usize = 4096;
/// The largest message a server reads before the client is authenticated: with a secret, the
/// hello; without one, the whole plain request (a lease or registry request takes well under
/// 1 KiB). Beyond it nothing more is read or parsed, so a stranger's first message costs a
/// server a bounded amount of memory (a 16 MiB JSON array parsed into a value tree took
/// ~280 MB).
pub const MAX_PRE_AUTH_MESSAGE: usize = 64 << 10;
/// The environment variable naming a client's secret file.
pub const SECRET_ENV: &str = "RFAAS_SECRET_FILE";
/// The first bytes of every MAC input (domain separation from any other use of the secret).
pub const LABEL: &[u8] = b"rfaas-auth-v1";

type HmacSha256 = Hmac<Sha256>;

/// Why authentication failed, or a secret cannot be used. The messages are meant for people:
/// a server sends its own as the refusal's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The secret file is missing, unreadable, too short or too long, or too widely readable.
    #[error("secret file {}: {why}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A secret given as bytes is too short.
    #[error("a secret needs at least {MIN_SECRET_LEN} bytes, this one has {0}")]
    SecretTooShort(usize),
    /// No nonce could be drawn from the operating system.
    #[error("cannot draw a random nonce: {0}")]
    Random(std::io::Error),
    /// The connection failed or carried a malformed frame.
    #[error("{}", describe(.0))]
    Transport(#[from] TransportError),
    /// To a server with a secret, a client sent a plain request (no credentials).
    #[error(
        "this {} requires authentication, and the client sent no credentials: give the client the cluster's shared secret (RFAAS_SECRET_FILE, LeaseSpec::secret or RegistryClient::with_secret)",
        .0.server()
    )]
    Required(AuthService),
    /// To a server without a secret, a client sent an authentication hello.
    #[error(
        "this {} has no secret_file configured and does not authenticate: a client with a secret will not use it (configure the same secret on both sides, or none)",
        .0.server()
    )]
    NotConfigured(AuthService),
    /// A malformed or unsupported hello or challenge.
    #[error("bad authentication message: {0}")]
    Malformed(String),
    /// The client's MAC does not verify: another secret, or a tampered message.
    #[error(
        "authentication failed: the request's MAC does not match this {}'s secret (a different secret, or a tampered message)",
        .0.server()
    )]
    BadMac(AuthService),
    /// The server's proof or a sealed answer does not verify.
    #[error(
        "authentication failed: the {} does not prove that it holds our secret (a different secret, or not a genuine {})",
        .0.server(),
        .0.server()
    )]
    BadProof(AuthService),
    /// The server answered without authenticating, with this reason.
    #[error("the {} did not authenticate: {why}", service.server())]
    Refused {
        /// The service asked.
        service: AuthService,
        /// The server's words.
        why: String,
    },
}

/// A transport error with its detail (an i/o error's own message included).
fn describe(e: &TransportError) -> String {
    match e {
        TransportError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the connection closed in the middle of the exchange".into()
        }
        TransportError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "the peer did not answer in time".into()
        }
        TransportError::Io(io) => format!("control connection failed: {io}"),
        other => other.to_string(),
    }
}

/// Key bytes, zeroed when the last copy of the [`Secret`] goes.
struct Key(Vec<u8>);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A shared secret (HMAC key). Cheap to clone; its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret {
    key: Arc<Key>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from bytes (at least [`MIN_SECRET_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, AuthError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(AuthError::SecretTooShort(bytes.len()));
        }
        Ok(Secret {
            key: Arc::new(Key(bytes.to_vec())),
        })
    }

    /// Reads a secret file. The key is the file's bytes less one trailing newline (`\n` or
    /// `\r\n`), so `openssl rand -hex 32 > FILE` and `head -c 32 /dev/urandom > FILE` both
    /// work. Refused, like ssh refuses private keys: a file that is not a regular file, empty,
    /// shorter than [`MIN_SECRET_LEN`] or longer than [`MAX_SECRET_LEN`] bytes, or that group
    /// or others may read or write (mode `& 0o077` not zero).
    pub fn from_file(path: &Path) -> Result<Secret, AuthError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let bad = |why: String| AuthError::SecretFile {
            path: path.to_owned(),
            why,
        };
        // Non-blocking, so that a FIFO in its place fails the checks instead of hanging here.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| bad(format!("cannot open it: {e}")))?;
        // Checked on the open file, so the checks and the read see the same file.
        let meta = file
            .metadata()
            .map_err(|e| bad(format!("cannot stat it: {e}")))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "group or others may access it (mode {mode:04o}); allow only its owner: chmod 600 {}",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        let key = Key(bytes);
        let mut len = key.0.len();
        if key.0[..len].ends_with(b"\n") {
            len -= 1;
            if key.0[..len].ends_with(b"\r") {
                len -= 1;
            }
        }
        if len == 0 {
            return Err(bad("it is empty".into()));
        }
        if key.0.len() > MAX_SECRET_LEN {
            return Err(bad(format!(
                "longer than {MAX_SECRET_LEN} bytes: is it the right file?"
            )));
        }
        if len < MIN_SECRET_LEN {
            return Err(bad(format!(
                "{len} bytes is too short, a secret needs at least {MIN_SECRET_LEN} (e.g. `openssl rand -hex 32 > FILE`)"
            )));
        }
        Ok(Secret {
            key: Arc::new(Key(key.0[..len].to_vec())),
        })
    }

    /// The secret named by `$RFAAS_SECRET_FILE`, if that is set (and not empty).
    pub fn from_env() -> Result<Option<Secret>, AuthError> {
        match std::env::var_os(SECRET_ENV) {
            Some(p) if !p.is_empty() => Secret::from_file(Path::new(&p)).map(Some),
            _ => Ok(None),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length (longer ones are hashed first): this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.key.0).unwrap_or_else(|_| unreachable!())
    }
}

/// Which way a message goes; part of its MAC, so that nothing one side says verifies as the
/// other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::ToServer => b"client",
            Direction::ToClient => b"server",
        }
    }
}

/// Writes one length-prefixed frame (`u32` little-endian length, then the body).
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> Result<(), TransportError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= MAX_CONTROL_MESSAGE)
        .ok_or_else(|| {
            TransportError::Protocol(format!(
                "message of {} bytes (at most {MAX_CONTROL_MESSAGE})",
                body.len()
            ))
        })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    Ok(())
}

/// Reads one length-prefixed frame of at most `max` bytes (the length is checked before
/// anything is allocated).
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(TransportError::Protocol(format!(
            "message of {len} bytes (at most {max})"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// `bytes` as lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// 32 bytes from 64 hex digits (either case); `None` for anything else.
fn from_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A fresh session token: [`NONCE_LEN`] random bytes as lowercase hex
/// ([`crate::wire::SESSION_TOKEN_LEN`] characters).
pub fn session_token() -> Result<String, AuthError> {
    use std::fmt::Write as _;
    let bytes = random_nonce()?;
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// A nonce from the kernel's random source (`getrandom(2)`).
pub fn random_nonce() -> Result<[u8; NONCE_LEN], AuthError> {
    let mut buf = [0u8; NONCE_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice of `buf`;
        // getrandom writes at most that many bytes into it and keeps no reference.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(AuthError::Random(e));
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// An authenticated control connection: both nonces, and a message counter per direction.
/// Every message after the handshake is sealed (tag, then body) and opened with it.
#[derive(Debug)]
pub struct Channel {
    secret: Secret,
    service: AuthService,
    client: bool,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
    sent: u64,
    received: u64,
    /// The reason in a plain (unsealed) refusal of the service, if a frame is one.
    refusal: fn(&[u8]) -> Option<String>,
}

fn no_refusal(_: &[u8]) -> Option<String> {
    None
}

impl Channel {
    /// The MAC state of message `seq` going `dir`, before its body.
    fn mac(&self, dir: Direction, seq: u64) -> HmacSha256 {
        let mut m = self.secret.mac();
        for field in [LABEL, self.service.as_str().as_bytes(), dir.label()] {
            m.update(field);
            m.update(&[0]);
        }
        m.update(&self.client_nonce);
        m.update(&self.server_nonce);
        m.update(&seq.to_le_bytes());
        m
    }

    fn outgoing(&self) -> Direction {
        if self.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }

    fn incoming(&self) -> Direction {
        if self.client {
            Direction::ToClient
        } else {
            Direction::ToServer
        }
    }

    /// Seals the next outgoing message: its tag, then `body`.
    pub fn seal(&mut self, body: &[u8]) -> Vec<u8> {
        let mut m = self.mac(self.outgoing(), self.sent);
        self.sent += 1;
        m.update(body);
        let mut out = Vec::with_capacity(TAG_LEN + body.len());
        out.extend_from_slice(&m.finalize().into_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Opens the next incoming message: checks its tag (in constant time) and returns its
    /// body. A failed check consumes no counter.
    pub fn open<'f>(&mut self, frame: &'f [u8]) -> Result<&'f [u8], AuthError> {
        let fail = || {
            if self.client {
                AuthError::BadProof(self.service)
            } else {
                AuthError::BadMac(self.service)
            }
        };
        if frame.len() < TAG_LEN {
            return Err(fail());
        }
        let (tag, body) = frame.split_at(TAG_LEN);
        let mut m = self.mac(self.incoming(), self.received);
        m.update(body);
        m.verify_slice(tag).map_err(|_| fail())?;
        self.received += 1;
        Ok(body)
    }

    /// Sends `msg` as JSON, sealed.
    pub fn send_json<T: serde::Serialize>(
        &mut self,
        w: &mut impl Write,
        msg: &T,
    ) -> Result<(), AuthError> {
        let body = serde_json::to_vec(msg)
            .map_err(|e| TransportError::Protocol(format!("encoding message: {e}")))?;
        let sealed = self.seal(&body);
        Ok(write_frame(w, &sealed)?)
    }

    /// Receives a sealed JSON message. An unsealed refusal of the service (what a server says
    /// when it could not verify us) comes back as [`AuthError::Refused`].
    pub fn recv_json<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        r: &mut impl Read,
    ) -> Result<T, AuthError> {
        let frame = read_frame(r, MAX_CONTROL_MESSAGE)?;
        let body = match self.open(&frame) {
            Ok(body) => body,
            Err(e) => {
                return Err(match (self.refusal)(&frame) {
                    Some(why) => AuthError::Refused {
                        service: self.service,
                        why,
                    },
                    None => e,
                });
            }
        };
        serde_json::from_slice(body).map_err(|e| {
            AuthError::Transport(TransportError::Protocol(format!("malformed message: {e}")))
        })
    }

    /// The client's side of the handshake on a fresh connection: sends a hello, checks the
    /// server's proof. `refusal` extracts the reason from a plain answer of the service (a
    /// server without a secret, or one that refused the hello).
    pub fn connect(
        stream: &mut (impl Read + Write),
        secret: &Secret,
        service: AuthService,
        refusal: fn(&[u8]) -> Option<String>,
    ) -> Result<Channel, AuthError> {
        let client_nonce = random_nonce()?;
        let hello = AuthHello {
            rfaas_auth: AUTH_PROTOCOL,
            service,
            nonce: to_hex(&client_nonce),
        };
        let body = serde_json::to_vec(&hello)
            .map_err(|e| TransportError::Protocol(format!("encoding message: {e}")))?;
        write_frame(stream, &body)?;
        let frame = read_frame(stream, MAX_CONTROL_MESSAGE)?;
        let challenge: AuthChallenge = match serde_json::from_slice(&frame) {
            Ok(c) => c,
            Err(e) => {
                return Err(match refusal(&frame) {
                    Some(why) => AuthError::Refused { service, why },
                    None => AuthError::Malformed(format!("expected a challenge: {e}")),
                });
            }
        };
        let (Some(server_nonce), Some(proof)) =
            (from_hex32(&challenge.nonce), from_hex32(&challenge.proof))
        else {
            return Err(AuthError::Malformed(
                "the challenge's nonce and proof must be 64 hex digits each".into(),
            ));
        };
        let mut ch = Channel {
            secret: secret.clone(),
            service,
            client: true,
            client_nonce,
            server_nonce,
            sent: 0,
            received: 0,
            refusal,
        };
        // The proof is the server's sealed message 0 with an empty body: a bare tag.
        ch.open(&proof)?;
        Ok(ch)
    }
}

/// What a server makes of a new control connection ([`accept`]).
#[derive(Debug)]
pub enum Accepted {
    /// No secret configured, and a plain request: its bytes.
    Open(Vec<u8>),
    /// An authenticated client: the channel for the answers, and the request's bytes (their
    /// MAC verified).
    Authenticated(Channel, Vec<u8>),
}

/// Whether a first message is an authentication hello: a JSON object with an `rfaas_auth`
/// key. `Some(Err)` for one that is malformed.
fn parse_hello(frame: &[u8]) -> Option<Result<AuthHello, AuthError>> {
    let value: serde_json::Value = serde_json::from_slice(frame).ok()?;
    value.get("rfaas_auth")?;
    Some(
        serde_json::from_value::<AuthHello>(value)
            .map_err(|e| AuthError::Malformed(format!("hello: {e}"))),
    )
}

/// The server's side of a new control connection: reads the first message and, with a
/// `secret`, runs the handshake and verifies the request's MAC. Without a secret, a plain
/// request passes as it is and a hello is refused; with one, a plain request is refused. On
/// an error the caller answers a plain refusal with the error's text and closes.
pub fn accept(
    stream: &mut (impl Read + Write),
    secret: Option<&Secret>,
    service: AuthService,
) -> Result<Accepted, AuthError> {
    let first = read_frame(stream, MAX_PRE_AUTH_MESSAGE)?;
    let (secret, hello) = match (secret, parse_hello(&first)) {
        (None, None) => return Ok(Accepted::Open(first)),
        (None, Some(_)) => return Err(AuthError::NotConfigured(service)),
        (Some(_), None) => return Err(AuthError::Required(service)),
        (Some(secret), Some(hello)) => (secret, hello?),
    };
    if hello.rfaas_auth != AUTH_PROTOCOL {
        return Err(AuthError::Malformed(format!(
            "authentication protocol {} (this {} speaks {AUTH_PROTOCOL})",
            hello.rfaas_auth,
            service.server()
        )));
    }
    if hello.service != service {
        return Err(AuthError::Malformed(format!(
            "the client asked for the {} service, but this is a {}",
            hello.service.as_str(),
            service.server()
        )));
    }
    let client_nonce = from_hex32(&hello.nonce)
        .ok_or_else(|| AuthError::Malformed("the hello's nonce must be 64 hex digits".into()))?;
    let mut ch = Channel {
        secret: secret.clone(),
        service,
        client: false,
        client_nonce,
        server_nonce: random_nonce()?,
        sent: 0,
        received: 0,
        refusal: no_refusal,
    };
    let proof = ch.seal(b"");
    let challenge = AuthChallenge {
        nonce: to_hex(&ch.server_nonce),
        proof: to_hex(&proof),
    };
    let body = serde_json::to_vec(&challenge)
        .map_err(|e| TransportError::Protocol(format!("encoding message: {e}")))?;
    write_frame(stream, &body)?;
    let sealed = read_frame(stream, MAX_PRE_AUTH_MESSAGE)?;
    let request = ch.open(&sealed)?.to_vec();
    Ok(Accepted::Authenticated(ch, request))
}

#[cfg(test)]
mod tests;
