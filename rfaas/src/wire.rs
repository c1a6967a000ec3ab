//! Wire types: everything that crosses a process boundary as raw bytes.
//!
//! These are the only serialized or zero-copy types of the crate. Byte-by-byte layouts are
//! documented in `docs/protocol.md`. Everything read from a peer goes through a validating
//! constructor ([`Status::from_u32`], [`SliceDesc`] bounds checks in the trampoline frame).

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Version of the function-library ABI (manifest layout, trampoline signature, argument
/// layout rules). An executor refuses a library built for another version. 2: error and panic
/// messages are at most [`crate::codec::MAX_MESSAGE`] bytes.
pub const ABI_VERSION: u32 = 2;

/// Magic number at the start of a [`Manifest`](crate::abi::Manifest): `b"rfaasMF\0"`.
pub const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"rfaasMF\0");

/// Name of the one symbol a function library exports.
pub const MANIFEST_SYMBOL: &str = "rfaas_manifest";

/// The symbol of a function library's panic strategy: a `u8`, 1 if the library was built
/// with `panic = "unwind"` (a panicking function is caught and answers `Panic`), 0 if with
/// `panic = "abort"` (a panicking function ends the executor process). Libraries without it
/// (hand-written C, say) do not unwind into the executor either way.
pub const PANIC_STRATEGY_SYMBOL: &str = "rfaas_panic_unwinds";

/// Alignment of input and output buffers, and of every slice inside them.
pub const BUFFER_ALIGN: usize = 8;

/// Rounds `n` up to the next multiple of [`BUFFER_ALIGN`]; `None` on overflow.
pub const fn align_up(n: usize) -> Option<usize> {
    match n.checked_add(BUFFER_ALIGN - 1) {
        Some(v) => Some(v & !(BUFFER_ALIGN - 1)),
        None => None,
    }
}

/// Where a slice argument lives inside an input or output buffer: a byte offset from the
/// buffer's start and a length in elements. Little-endian, 8 bytes, alignment 1.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct SliceDesc {
    /// Byte offset from the start of the buffer; a multiple of the element alignment.
    pub offset: U32,
    /// Number of elements.
    pub len: U32,
}

impl SliceDesc {
    /// A descriptor for `len` elements at byte `offset`.
    pub fn new(offset: u32, len: u32) -> Self {
        SliceDesc {
            offset: U32::new(offset),
            len: U32::new(len),
        }
    }
}

/// Outcome of one invocation, as it crosses the wire and the C ABI (a `u32`).
///
/// This is deliberately separate from the Rust error types: it is what a peer says, and a
/// peer's number is checked with [`Status::from_u32`] before it means anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Status {
    /// The function returned; the output holds its result.
    Ok = 0,
    /// The function returned `Err`; the output holds the error's `Display` text (UTF-8).
    FunctionError = 1,
    /// The function panicked; the output holds the panic message (UTF-8).
    Panic = 2,
    /// The input is shorter than the function's fixed argument layout.
    InputTooShort = 3,
    /// An input or output buffer, or a slice inside one, is not suitably aligned.
    Misaligned = 4,
    /// A slice descriptor points outside its buffer, overflows, or overlaps another output.
    BadSlice = 5,
    /// The output buffer cannot hold the result.
    OutputTooSmall = 6,
    /// The function index names no function of the library.
    UnknownFunction = 7,
    /// The input exceeds the executor's limit.
    InputTooLarge = 8,
    /// A null buffer pointer or another broken calling convention.
    BadCall = 9,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 10] = [
        Status::Ok,
        Status::FunctionError,
        Status::Panic,
        Status::InputTooShort,
        Status::Misaligned,
        Status::BadSlice,
        Status::OutputTooSmall,
        Status::UnknownFunction,
        Status::InputTooLarge,
        Status::BadCall,
    ];

    /// Decodes a status a peer sent; `None` for numbers no status has.
    pub fn from_u32(v: u32) -> Option<Status> {
        Status::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// The number on the wire.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Whether the output carries a UTF-8 message (function error or panic).
    pub fn has_message(self) -> bool {
        matches!(self, Status::FunctionError | Status::Panic)
    }

    /// A short lowercase description.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::FunctionError => "the function returned an error",
            Status::Panic => "the function panicked",
            Status::InputTooShort => "input shorter than the argument layout",
            Status::Misaligned => "misaligned buffer or slice",
            Status::BadSlice => "slice descriptor out of bounds or overlapping",
            Status::OutputTooSmall => "output buffer too small for the result",
            Status::UnknownFunction => "unknown function index",
            Status::InputTooLarge => "input larger than the executor allows",
            Status::BadCall => "broken calling convention (null buffer)",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Header at the start of every input slot: where the invocation's result goes.
/// 24 bytes, little-endian, alignment 1; the argument layout follows at offset 24.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct InvocationHeader {
    /// The client's invocation id (24 bits), echoed in the response immediate.
    pub id: U32,
    /// Function index in the executor's manifest.
    pub function: U32,
    /// Bytes of argument layout after the header.
    pub input_len: U32,
    /// Offset of the result area in the client's result region.
    pub result_offset: U32,
    /// Bytes available in the result area.
    pub result_cap: U32,
    /// [`FLAG_SMALL_RESULT`], [`FLAG_PLACED`] or 0; the other bits are reserved and must be
    /// zero.
    pub flags: U32,
}

/// [`InvocationHeader::flags`] bit: the client expects a successful result of at most the
/// fabric's inline size. A worker that can answer with an inline write (shared memory) then
/// runs the function into memory of its own and sends the output inside the completion entry,
/// so the client reads one cache line instead of two; a longer output (an error message) is
/// copied into the result area as usual. Without the bit the function writes the result area
/// directly (large outputs are not copied twice).
pub const FLAG_SMALL_RESULT: u32 = 1;
/// [`InvocationHeader::flags`] bit: the input ends with a [`PlacedOutputs`] list, and the
/// output slices it names go to the client's buffers, not to the result area. Used on fabrics
/// without a window into the client's memory (TCP, RDMA), whose workers run functions into
/// staging of their own: the worker sends each listed range of its output with a plain write
/// ([`crate::transport::Endpoint::write`]) to where the list says, then the rest of the output
/// (the return value) to the result area with the completion, so `rfaas::Buffer` outputs
/// arrive in place, as over shared memory. Workers with a window answer it `BadCall`.
pub const FLAG_PLACED: u32 = 2;
/// Every flag a worker understands; a header with another bit set is answered `BadCall`.
pub const KNOWN_FLAGS: u32 = FLAG_SMALL_RESULT | FLAG_PLACED;

/// One output range of a [`FLAG_PLACED`] invocation: `len` bytes at `at` in the function's
/// output go to `dest` bytes past the invocation's result area in the client's result region
/// (its buffer arena). Little-endian, 12 bytes, alignment 1.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct PlacedOutput {
    /// Byte offset in the function's output.
    pub at: U32,
    /// Bytes (not zero).
    pub len: U32,
    /// Byte offset from the invocation's result area (`result_offset`) in the client's result
    /// region.
    pub dest: U32,
}

/// The list a [`FLAG_PLACED`] input ends with: up to [`PlacedOutputs::MAX`] [`PlacedOutput`]s,
/// then their count as a little-endian `u32` (the input's last four bytes). Ranges are in
/// increasing `at` order, not overlapping and not empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlacedOutputs {
    list: [PlacedOutput; PlacedOutputs::MAX],
    n: usize,
}

impl PlacedOutputs {
    /// Most output ranges one invocation places (more output slices are copied instead).
    pub const MAX: usize = 4;

    /// Adds a range; `false` (and nothing added) when the list is full.
    pub fn push(&mut self, at: u32, len: u32, dest: u32) -> bool {
        let Some(slot) = self.list.get_mut(self.n) else {
            return false;
        };
        *slot = PlacedOutput {
            at: at.into(),
            len: len.into(),
            dest: dest.into(),
        };
        self.n += 1;
        true
    }

    /// The ranges.
    pub fn ranges(&self) -> &[PlacedOutput] {
        &self.list[..self.n]
    }

    /// Bytes the list takes at the end of an input.
    pub fn wire_len(&self) -> usize {
        self.n * size_of::<PlacedOutput>() + 4
    }

    /// Writes the list (ranges, then count) into `buf`, which is [`PlacedOutputs::wire_len`]
    /// bytes long.
    pub fn write(&self, buf: &mut [u8]) {
        let (ranges, count) = buf.split_at_mut(self.n * size_of::<PlacedOutput>());
        ranges.copy_from_slice(self.ranges().as_bytes());
        count.copy_from_slice(&(self.n as u32).to_le_bytes());
    }

    /// Splits a peer's input into the argument layout and the list it ends with, checking
    /// the count, the order of the ranges and that none is empty or overflows.
    pub fn split(input: &[u8]) -> Result<(&[u8], PlacedOutputs), &'static str> {
        let (rest, count) = input
            .split_last_chunk::<4>()
            .ok_or("input shorter than a placement count")?;
        let n = u32::from_le_bytes(*count) as usize;
        if n > PlacedOutputs::MAX {
            return Err("more placed outputs than allowed");
        }
        let bytes = n * size_of::<PlacedOutput>();
        let at = rest
            .len()
            .checked_sub(bytes)
            .ok_or("input shorter than its placement list")?;
        let (args, ranges) = rest.split_at(at);
        let mut list = PlacedOutputs::default();
        let mut next = 0u64;
        for bytes in ranges.chunks_exact(size_of::<PlacedOutput>()) {
            // Copied out once and checked and kept from the copy: over RDMA the client can
            // rewrite its list while we read it, and a check of one read with a use of another
            // would let it through unchecked.
            let r = PlacedOutput::read_from_bytes(bytes).map_err(|_| "malformed list")?;
            let (at, len, dest) = (r.at.get(), r.len.get(), r.dest.get());
            if len == 0 || u64::from(at) < next {
                return Err("placed outputs empty, overlapping or out of order");
            }
            next = u64::from(at) + u64::from(len);
            list.push(at, len, dest);
        }
        Ok((args, list))
    }
}

/// Size of [`InvocationHeader`]; arguments start here (a multiple of 8).
pub const HEADER_LEN: usize = size_of::<InvocationHeader>();

/// Largest invocation id: ids travel in the upper 24 bits of response immediates.
pub const MAX_INVOCATION_ID: u32 = (1 << 24) - 1;

/// The immediate of a response: `id << 8 | status`.
pub fn response_imm(id: u32, status: Status) -> u32 {
    (id << 8) | (status.as_u32() & 0xff)
}

/// Splits a response immediate into `(id, raw status)`; the status is still unchecked.
pub fn split_response_imm(imm: u32) -> (u32, u32) {
    (imm >> 8, imm & 0xff)
}

/// Version of the session protocol below (2: session tokens in [`Hello`] and [`Attach`];
/// 3: shared-memory files sealed at their size, and refused unsealed).
pub const SESSION_PROTOCOL: u32 = 3;

/// Length of a session token: 32 random bytes, as 64 lowercase hex digits.
pub const SESSION_TOKEN_LEN: usize = 64;

/// Region key of each worker's input slots (executor side).
pub const INPUT_REGION: u32 = 1;
/// Region key of the client's result region.
pub const RESULT_REGION: u32 = 2;
/// Region key of the client's send staging (fabrics without a zero-copy window: TCP).
pub const SEND_REGION: u32 = 3;
/// Region key of a worker's output staging (fabrics without a zero-copy window: TCP).
pub const OUTPUT_REGION: u32 = 4;

/// One function an executor offers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionInfo {
    /// Function index (what [`InvocationHeader::function`] carries).
    pub index: u32,
    /// Name.
    pub name: String,
    /// Layout fingerprint.
    pub fingerprint: u64,
}

/// The executor's first message on a new session (JSON, length-prefixed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// [`SESSION_PROTOCOL`].
    pub protocol: u32,
    /// [`ABI_VERSION`] of the loaded library.
    pub abi_version: u32,
    /// Functions of the loaded library.
    pub functions: Vec<FunctionInfo>,
    /// Workers (leased cores); one endpoint each follows.
    pub workers: u32,
    /// Input slots per worker (invocations that may be in flight on it).
    pub slots: u32,
    /// Bytes per input slot, header included; result areas have the same size.
    pub slot_size: u32,
    /// For TCP sessions: the address the client connects one data connection per worker to,
    /// in worker order. Absent for shared memory (endpoints follow on the same socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// The client's answer before the endpoints connect.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`SESSION_PROTOCOL`].
    pub protocol: u32,
    /// Bytes of the client's result region (`workers * slots * slot_size`).
    pub result_len: u64,
    /// The session token, when the executor requires one (a managed lease's executor: the
    /// manager hands the token to the lease holder only, in [`LeaseReply::Granted`]). An
    /// executor with a token refuses a hello without it, and keeps waiting for its client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The executor's answer to a [`Hello`] (session protocol 2): the session goes on, or is
/// refused with the reason (wrong or missing token, another protocol, a bad result region).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Verdict {
    /// The endpoints follow.
    Accepted,
    /// Refused; the executor closes the connection.
    Refused(String),
}

/// The client's first message on each data connection of a TCP-controlled session (TCP,
/// RDMA), before the endpoint handshake: it ties the connection to the session. An executor
/// with a token closes data connections that do not present it and keeps accepting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// The session token, as in [`Hello::token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Whether `offered` is the `expected` session token, comparing every byte (the time taken
/// does not depend on where they differ). No token expected: anything goes.
pub fn token_matches(expected: Option<&str>, offered: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let offered = offered.unwrap_or("");
    if offered.len() != expected.len() {
        return false;
    }
    let diff = expected
        .bytes()
        .zip(offered.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// What one side of an endpoint tells the other while connecting (JSON). Over shared memory
/// the descriptors follow in the same message: `[doorbell, control block (active side only),
/// regions...]`; over TCP there are none.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// `(key, len)` of each region, in descriptor order.
    pub regions: Vec<(u32, u64)>,
    /// Whether a control-block descriptor follows the doorbell (shared memory, active side).
    #[serde(default)]
    pub control: bool,
}

/// A node (an executor manager) as it registers with the cluster registry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Unique node name (1..=128 bytes).
    pub id: String,
    /// Where its manager accepts lease requests (`host:port`).
    pub address: String,
    /// Cores it offers in total.
    pub cores: u32,
    /// Memory it offers in total, MiB.
    pub memory_mib: u64,
    /// Whether it serves leases over RDMA ([`Fabric::Verbs`]).
    #[serde(default)]
    pub rdma: bool,
}

/// A registered node and its last reported free capacity.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    /// The node.
    pub info: NodeInfo,
    /// Free cores at the last heartbeat.
    pub free_cores: u32,
    /// Free memory at the last heartbeat, MiB.
    pub free_memory_mib: u64,
    /// Milliseconds since the last heartbeat (or registration).
    pub age_ms: u64,
}

/// A request to the registry (length-prefixed JSON, one per connection).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RegistryRequest {
    /// Adds or replaces a node, with all of its capacity free.
    Register(NodeInfo),
    /// Reports a node's free capacity and that it is alive.
    Heartbeat {
        /// The node.
        id: String,
        /// Where it serves, as registered: a heartbeat for an entry with another address (one
        /// another process registered under this id) is refused, not counted for it. Absent
        /// from managers before 2026-11-25 (then not checked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Free cores.
        free_cores: u32,
        /// Free memory, MiB.
        free_memory_mib: u64,
    },
    /// Removes a node.
    Deregister {
        /// The node.
        id: String,
    },
    /// Lists the live nodes, most free cores first.
    List,
}

/// The registry's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RegistryResponse {
    /// Done.
    Ok,
    /// The live nodes.
    Nodes(Vec<NodeStatus>),
    /// Refused, with the reason.
    Error(String),
}

/// Which fabric a lease's invocations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fabric {
    /// Shared memory (client on the manager's host).
    Shm,
    /// TCP (any client).
    Tcp,
    /// Shared memory when the client is on the manager's host, TCP otherwise (the manager
    /// decides; the grant says which).
    Auto,
    /// RDMA verbs (nodes with an RDMA device and executors built with the `verbs` feature;
    /// the client needs the `verbs` feature of `rfaas` too).
    Verbs,
}

/// A lease request to a node's manager (length-prefixed JSON on a TCP control connection). If
/// `package_len` is set, the manager answers [`LeaseReply::NeedPackage`] (or refuses the size)
/// and then reads that many raw bytes of the function library.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Cores (workers) to lease.
    pub cores: u32,
    /// Memory to reserve, MiB.
    pub memory_mib: u64,
    /// Hot timeout in µs (-1 always hot, 0 always warm).
    pub hot_timeout_us: i64,
    /// Fabric for the invocations.
    pub fabric: Fabric,
    /// Hex SHA-256 of the function library.
    pub package_sha256: String,
    /// Bytes of library that follow, when the node may not have it cached.
    pub package_len: Option<u64>,
    /// Slots per worker (default 8).
    pub slots: Option<u32>,
    /// Bytes per slot (default 1 MiB).
    pub slot_size: Option<u32>,
    /// The client sends a byte on the control connection at least this often (ms); the manager
    /// reclaims a lease whose client stays silent for three periods. `None`: only a closed
    /// connection ends the lease.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

/// The manager's answer to a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LeaseReply {
    /// An executor process serves the lease at `endpoint` (a Unix socket path for shm, an
    /// address for TCP) until the control connection closes.
    Granted {
        /// The node's id for the lease (in its ledger).
        lease_id: u64,
        /// Where to connect.
        endpoint: String,
        /// The fabric the executor serves (never `Auto`).
        fabric: Fabric,
        /// The session token the executor requires ([`Hello::token`]); only the lease holder
        /// learns it. Absent from managers before session protocol 2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// To a request without `package_len`: the node lacks the package; ask again with it. To a
    /// request with `package_len`: go ahead, send the bytes (the size was accepted).
    NeedPackage,
    /// Refused, with the reason.
    Refused(String),
}

/// What a manager tells the holder of a granted lease on its control connection after the
/// grant (the client's heartbeats go the other way): length-prefixed JSON like every control
/// message, sealed on an authenticated connection. Clients that do not read it lose nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LeaseNotice {
    /// The manager was asked to stop: it takes no new leases, and ends this one in
    /// `within_ms` unless the client ends it first (sent once, when the stop begins).
    Stopping {
        /// The node's id.
        node_id: String,
        /// Milliseconds until the manager ends the lease.
        within_ms: u64,
    },
}

/// Version of the control-plane authentication protocol ([`AuthHello::rfaas_auth`]).
pub const AUTH_PROTOCOL: u32 = 1;

/// Which control-plane service a client authenticates to; part of every MAC, so that what was
/// said to one service means nothing to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthService {
    /// A node's manager (lease requests).
    Lease,
    /// The cluster registry.
    Registry,
}

impl AuthService {
    /// Its name in MACs and messages: `lease` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthService::Lease => "lease",
            AuthService::Registry => "registry",
        }
    }

    /// The kind of server that offers it: `manager` or `registry`.
    pub fn server(self) -> &'static str {
        match self {
            AuthService::Lease => "manager",
            AuthService::Registry => "registry",
        }
    }
}

/// A client's first message on a control connection to a server with a shared secret
/// (length-prefixed JSON). See `docs/control-plane.md` for the whole exchange.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthHello {
    /// [`AUTH_PROTOCOL`]; the key's presence is what marks a hello.
    pub rfaas_auth: u32,
    /// The service the client means to use.
    pub service: AuthService,
    /// The client's nonce: 32 random bytes, 64 lowercase hex digits.
    pub nonce: String,
}

/// The server's answer to an [`AuthHello`] (length-prefixed JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthChallenge {
    /// The server's nonce: 32 random bytes, 64 hex digits.
    pub nonce: String,
    /// The server's proof that it holds the secret: the MAC of its message 0 (empty), 64 hex
    /// digits.
    pub proof: String,
}
