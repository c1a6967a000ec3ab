//! A thin safe layer of our own over `ibverbs-sys` (libibverbs): devices, protection domains,
//! memory registration of existing memory, RC queue pairs and their state transitions,
//! completion queues with completion channels, a shared receive queue, and
//! `RDMA_WRITE_WITH_IMM` (inline below the device limit).
//!
//! Every object owns its verbs handle and releases it on drop, after the objects that depend
//! on it (each holds an `Arc` of its parent). Nothing here interprets peer data: the backend
//! above validates everything a peer sent before it reaches these calls.

use ibverbs_sys as ffi;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;

/// Why a verbs call failed.
#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    /// No RDMA here: the kernel has no RDMA support (ENOSYS) or no device is present.
    #[error("no RDMA device: {0}")]
    Unavailable(String),
    /// A named device does not exist.
    #[error("no RDMA device named {name:?} (devices: {found})")]
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The devices present.
        found: String,
    },
    /// A verbs call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// The libibverbs function.
        call: &'static str,
        /// The error it reported.
        source: io::Error,
    },
}

fn failed(call: &'static str) -> VerbsError {
    VerbsError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

fn failed_with(call: &'static str, rc: i32) -> VerbsError {
    // Verbs calls return either -1 with errno or a positive errno value.
    let source = if rc > 0 {
        io::Error::from_raw_os_error(rc)
    } else {
        io::Error::last_os_error()
    };
    VerbsError::Call { call, source }
}

/// The names of the RDMA devices of this host. No RDMA support in the kernel (ENOSYS) and an
/// empty list are both [`VerbsError::Unavailable`], with the reason.
pub fn device_names() -> Result<Vec<String>, VerbsError> {
    let list = DeviceList::get()?;
    Ok(list.names())
}

/// The device list, freed on drop.
struct DeviceList {
    list: *mut *mut ffi::ibv_device,
    len: usize,
}

impl DeviceList {
    fn get() -> Result<DeviceList, VerbsError> {
        let mut n = 0i32;
        // SAFETY: `n` is a valid out-pointer; the returned list is freed in `Drop`.
        let list = unsafe { ffi::ibv_get_device_list(&mut n) };
        if list.is_null() {
            let e = io::Error::last_os_error();
            return Err(VerbsError::Unavailable(
                if e.raw_os_error() == Some(libc::ENOSYS) {
                    "this kernel has no RDMA support (ibv_get_device_list: ENOSYS)".into()
                } else {
                    format!("ibv_get_device_list: {e}")
                },
            ));
        }
        let list = DeviceList {
            list,
            len: n.max(0) as usize,
        };
        if list.len == 0 {
            return Err(VerbsError::Unavailable(
                "no RDMA devices (ibv_devices lists none)".into(),
            ));
        }
        Ok(list)
    }

    fn device(&self, i: usize) -> *mut ffi::ibv_device {
        assert!(i < self.len);
        // SAFETY: the list holds `len` valid device pointers (i < len checked).
        unsafe { *self.list.add(i) }
    }

    fn name(&self, i: usize) -> String {
        // SAFETY: a valid device of the live list; the name is a NUL-terminated string owned
        // by the device, copied out here.
        unsafe {
            let p = ffi::ibv_get_device_name(self.device(i));
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    fn names(&self) -> Vec<String> {
        (0..self.len).map(|i| self.name(i)).collect()
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed once; opened contexts
        // stay valid after it is freed.
        unsafe { ffi::ibv_free_device_list(self.list) };
    }
}

/// Attributes of the port in use, as the connection setup needs them.
#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Active MTU (an `ibv_mtu` value: 1 = 256 B … 5 = 4096 B).
    pub active_mtu: u32,
    /// Whether the link layer is Ethernet (RoCE: addressing by GID only).
    pub ethernet: bool,
    /// The port is active.
    pub active: bool,
    /// Largest message (one work request's bytes) the port takes.
    pub max_msg: u32,
}

/// An open device: protection domains and completion queues are created from it.
pub struct Context {
    ctx: *mut ffi::ibv_context,
    name: String,
    port: u8,
    port_info: PortInfo,
    gid_index: u8,
    gid: [u8; 16],
    max_qp_wr: u32,
    max_cqe: u32,
    max_srq_wr: u32,
}

// SAFETY: libibverbs contexts may be used from any thread (the library locks internally); we
// never mutate through the raw pointer outside verbs calls.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("device", &self.name)
            .field("port", &self.port)
            .field("gid_index", &self.gid_index)
            .field("port_info", &self.port_info)
            .finish()
    }
}

impl Context {
    /// Opens `device` (the first device if `None`), checks `port` and reads GID `gid_index`.
    pub fn open(device: Option<&str>, port: u8, gid_index: u8) -> Result<Arc<Context>, VerbsError> {
        let list = DeviceList::get()?;
        let names = list.names();
        let i =
            match device {
                None => 0,
                Some(want) => names.iter().position(|n| n == want).ok_or_else(|| {
                    VerbsError::NoSuchDevice {
                        name: want.into(),
                        found: names.join(", "),
                    }
                })?,
            };
        // SAFETY: a valid device of the live list.
        let ctx = unsafe { ffi::ibv_open_device(list.device(i)) };
        if ctx.is_null() {
            return Err(failed("ibv_open_device"));
        }
        drop(list);
        // From here the context is closed by `Context::drop` on any error.
        let mut me = Context {
            ctx,
            name: names[i].clone(),
            port,
            port_info: PortInfo {
                lid: 0,
                active_mtu: 3,
                ethernet: true,
                active: false,
                max_msg: u32::MAX,
            },
            gid_index,
            gid: [0; 16],
            max_qp_wr: 0,
            max_cqe: 0,
            max_srq_wr: 0,
        };
        let mut dev = MaybeUninit::<ffi::ibv_device_attr>::zeroed();
        // SAFETY: `ctx` is open; `dev` is a writable device-attribute struct.
        let rc = unsafe { ffi::ibv_query_device(ctx, dev.as_mut_ptr()) };
        if rc != 0 {
            return Err(failed_with("ibv_query_device", rc));
        }
        // SAFETY: initialized by the successful query (and zeroed before it).
        let dev = unsafe { dev.assume_init() };
        if port == 0 || port > dev.phys_port_cnt {
            return Err(VerbsError::Call {
                call: "port check",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("device {} has ports 1..={}", me.name, dev.phys_port_cnt),
                ),
            });
        }
        me.max_qp_wr = dev.max_qp_wr.max(0) as u32;
        me.max_cqe = dev.max_cqe.max(0) as u32;
        me.max_srq_wr = dev.max_srq_wr.max(0) as u32;
        let mut attr = MaybeUninit::<ffi::ibv_port_attr>::zeroed();
        // SAFETY: the exported `ibv_query_port` fills the compat layout, a prefix of
        // `ibv_port_attr` (which is larger and zeroed), so every byte written is in bounds.
        let rc = unsafe {
            ffi::ibv_query_port(
                ctx,
                port,
                attr.as_mut_ptr().cast::<ffi::_compat_ibv_port_attr>(),
            )
        };
        if rc != 0 {
            return Err(failed_with("ibv_query_port", rc));
        }
        // SAFETY: zeroed, then (the prefix) written by the query: every field is a plain integer.
        let attr = unsafe { attr.assume_init() };
        me.port_info = PortInfo {
            lid: attr.lid,
            active_mtu: attr.active_mtu,
            ethernet: u32::from(attr.link_layer) == ffi::IBV_LINK_LAYER_ETHERNET,
            active: attr.state == ffi::ibv_port_state::IBV_PORT_ACTIVE,
            // 0 would mean the device did not say: no limit of its own then.
            max_msg: if attr.max_msg_sz == 0 {
                u32::MAX
            } else {
                attr.max_msg_sz
            },
        };
        let mut gid = MaybeUninit::<ffi::ibv_gid>::zeroed();
        // SAFETY: `ctx` open, `gid` a writable 16-byte union.
        let rc = unsafe { ffi::ibv_query_gid(ctx, port, i32::from(gid_index), gid.as_mut_ptr()) };
        if rc != 0 {
            return Err(failed_with("ibv_query_gid", rc));
        }
        // SAFETY: written by the query; any 16 bytes are a valid `raw` view.
        me.gid = unsafe { gid.assume_init().raw };
        Ok(Arc::new(me))
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port in use.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// The port's attributes.
    pub fn port_info(&self) -> PortInfo {
        self.port_info
    }

    /// The GID index in use and its GID.
    pub fn gid(&self) -> (u8, [u8; 16]) {
        (self.gid_index, self.gid)
    }

    /// Largest work-request depth of a queue pair, completion-queue size and shared receive
    /// queue depth the device allows.
    pub fn limits(&self) -> (u32, u32, u32) {
        (self.max_qp_wr, self.max_cqe, self.max_srq_wr)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object created from this context holds an `Arc` of it and is gone;
        // the context is closed once.
        unsafe { ffi::ibv_close_device(self.ctx) };
    }
}

/// A protection domain: the memory registrations, queue pairs and shared receive queues made
/// in it. A peer's RDMA write through a queue pair reaches only memory registered in that
/// queue pair's domain (with a matching rkey), so objects of different domains cannot reach
/// each other's memory even on one device.
pub struct ProtectionDomain {
    pd: *mut ffi::ibv_pd,
    ctx: Arc<Context>,
}

// SAFETY: a PD handle is immutable after allocation and usable from any thread (libibverbs
// locks internally); it is deallocated once, in Drop.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl std::fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("device", &self.ctx.name)
            .finish()
    }
}

impl ProtectionDomain {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<ProtectionDomain>, VerbsError> {
        // SAFETY: the context is open (held by the `Arc`); the PD is freed in `Drop`, before
        // the context can close (we hold an `Arc` of it).
        let pd = unsafe { ffi::ibv_alloc_pd(ctx.ctx) };
        if pd.is_null() {
            return Err(failed("ibv_alloc_pd"));
        }
        Ok(Arc::new(ProtectionDomain {
            pd,
            ctx: ctx.clone(),
        }))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: every object created in this domain holds an `Arc` of it and is gone; the PD
        // is deallocated once.
        unsafe { ffi::ibv_dealloc_pd(self.pd) };
    }
}

/// Registered memory: an existing mapping made accessible to the device (local write, and
/// remote write if asked for). The caller keeps the memory mapped for the registration's life.
pub struct MemoryRegion {
    mr: *mut ffi::ibv_mr,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: an MR handle is immutable after registration; deregistration happens once, in Drop.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Registers `len` bytes at `addr` in `pd` for local writes and, if `remote_write`, for
    /// peers' RDMA writes through queue pairs of the same domain (without it, or through a
    /// queue pair of another domain, a write naming this region's rkey fails at the
    /// responder).
    ///
    /// # Safety
    /// `addr..addr + len` must stay mapped (and not be unmapped or remapped) until the
    /// returned region is dropped.
    pub unsafe fn register(
        pd: &Arc<ProtectionDomain>,
        addr: *mut u8,
        len: usize,
        remote_write: bool,
    ) -> Result<MemoryRegion, VerbsError> {
        let mut access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if remote_write {
            access |= ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        // SAFETY: the PD is live (held by the `Arc`); the caller guarantees the range stays
        // mapped.
        let mr = unsafe { ffi::ibv_reg_mr(pd.pd, addr.cast(), len, access as i32) };
        if mr.is_null() {
            return Err(failed("ibv_reg_mr"));
        }
        Ok(MemoryRegion {
            mr,
            _pd: pd.clone(),
        })
    }

    /// The key for local scatter/gather entries.
    pub fn lkey(&self) -> u32 {
        // SAFETY: a live MR; the field is immutable after registration.
        unsafe { (*self.mr).lkey }
    }

    /// The key peers write with.
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.mr).rkey }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered once in `register`, deregistered once here.
        unsafe { ffi::ibv_dereg_mr(self.mr) };
    }
}

/// The work-request id of every receive we post: a completion carrying it consumed one of
/// the shared receive queue's entries, whatever its status or opcode. Send work requests are
/// numbered from 1 and never reach it.
pub const RECV_WR_ID: u64 = u64::MAX;

/// A completion queue with its completion channel (for sleeping until a completion arrives)
/// and a shared receive queue (the receives every write-with-immediate consumes), in one
/// protection domain.
pub struct Cq {
    pd: Arc<ProtectionDomain>,
    channel: *mut ffi::ibv_comp_channel,
    cq: *mut ffi::ibv_cq,
    srq: *mut ffi::ibv_srq,
}

// SAFETY: libibverbs CQ, SRQ and channel operations are thread-safe (providers lock); the
// handles are created once and destroyed once, in Drop.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

/// One work completion, reduced to what the backend needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wc {
    /// A write-with-immediate arrived on queue pair `qp_num` (it consumed a receive).
    Received {
        /// The receiving queue pair.
        qp_num: u32,
        /// The immediate, in host order.
        imm: u32,
        /// Bytes written.
        len: u32,
    },
    /// Something other than a write-with-immediate consumed a receive (a peer's `SEND`): not
    /// our protocol.
    Unexpected {
        /// The receiving queue pair.
        qp_num: u32,
        /// `ibv_wc_opcode` value.
        opcode: u32,
    },
    /// A signalled send work request finished successfully (and every earlier one of its
    /// queue pair).
    Sent {
        /// The sending queue pair.
        qp_num: u32,
        /// The work request's id.
        wr_id: u64,
    },
    /// A work request failed (the queue pair is now in the error state). Flushed work
    /// requests complete so too, signalled or not.
    Failed {
        /// The queue pair.
        qp_num: u32,
        /// `ibv_wc_status` value.
        status: u32,
        /// It was one of our receives (it consumed a shared receive queue entry).
        receive: bool,
    },
}

impl Wc {
    /// Whether this completion consumed one of the shared receive queue's entries.
    pub fn consumed_receive(&self) -> bool {
        match *self {
            Wc::Received { .. } | Wc::Unexpected { .. } => true,
            Wc::Failed { receive, .. } => receive,
            Wc::Sent { .. } => false,
        }
    }
}

impl Cq {
    /// Creates a completion queue of `cqe` entries with a channel (non-blocking fd) and a
    /// shared receive queue in `pd` of `srq_depth` zero-length receives, all posted.
    pub fn new(pd: &Arc<ProtectionDomain>, cqe: u32, srq_depth: u32) -> Result<Cq, VerbsError> {
        let ctx = pd.context();
        let mut me = Cq {
            pd: pd.clone(),
            channel: ptr::null_mut(),
            cq: ptr::null_mut(),
            srq: ptr::null_mut(),
        };
        // SAFETY: the context is live; the channel is destroyed in Drop after the CQ.
        me.channel = unsafe { ffi::ibv_create_comp_channel(ctx.ctx) };
        if me.channel.is_null() {
            return Err(failed("ibv_create_comp_channel"));
        }
        let fd = me.channel_fd();
        // SAFETY: fcntl on the channel's own descriptor.
        let nonblocking = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
        };
        if !nonblocking {
            return Err(failed("fcntl(O_NONBLOCK) on the completion channel"));
        }
        // SAFETY: context and channel are live; the CQ is destroyed in Drop.
        me.cq = unsafe {
            ffi::ibv_create_cq(
                ctx.ctx,
                cqe.min(i32::MAX as u32) as i32,
                ptr::null_mut(),
                me.channel,
                0,
            )
        };
        if me.cq.is_null() {
            return Err(failed("ibv_create_cq"));
        }
        let mut attr = ffi::ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: ffi::ibv_srq_attr {
                max_wr: srq_depth,
                max_sge: 1,
                srq_limit: 0,
            },
        };
        // SAFETY: the PD is live (held in `me`); `attr` is a valid init struct; destroyed in
        // Drop.
        me.srq = unsafe { ffi::ibv_create_srq(pd.pd, &mut attr) };
        if me.srq.is_null() {
            return Err(failed("ibv_create_srq"));
        }
        for _ in 0..srq_depth {
            me.post_receive()?;
        }
        Ok(me)
    }

    /// Posts one zero-length receive (id [`RECV_WR_ID`]) on the shared receive queue.
    pub fn post_receive(&self) -> Result<(), VerbsError> {
        let mut wr = ffi::ibv_recv_wr {
            wr_id: RECV_WR_ID,
            next: ptr::null_mut(),
            sg_list: ptr::null_mut(),
            num_sge: 0,
        };
        let mut bad = ptr::null_mut();
        // SAFETY: the SRQ is live; `wr` is a valid, single, zero-SGE work request that the
        // provider copies before returning.
        let rc = unsafe {
            let post = (*(*self.srq).context)
                .ops
                .post_srq_recv
                .expect("provider implements post_srq_recv");
            post(self.srq, &mut wr, &mut bad)
        };
        if rc != 0 {
            return Err(failed_with("ibv_post_srq_recv", rc));
        }
        Ok(())
    }

    /// Takes up to `out.len()` completions without blocking; returns how many were written.
    pub fn poll(&self, out: &mut [Wc]) -> Result<usize, VerbsError> {
        const BATCH: usize = 16;
        let mut raw = [MaybeUninit::<ffi::ibv_wc>::uninit(); BATCH];
        let want = out.len().min(BATCH);
        // SAFETY: the CQ is live; the provider writes at most `want` entries into `raw`.
        let n = unsafe {
            let poll = (*(*self.cq).context)
                .ops
                .poll_cq
                .expect("provider implements poll_cq");
            poll(self.cq, want as i32, raw.as_mut_ptr().cast())
        };
        if n < 0 {
            return Err(failed_with("ibv_poll_cq", -n));
        }
        for (slot, wc) in out.iter_mut().zip(&raw[..n as usize]) {
            // SAFETY: the first `n` entries were written by ibv_poll_cq.
            let wc = unsafe { wc.assume_init_ref() };
            // Only `wr_id`, `status` and `qp_num` are valid in a failed completion. Every
            // receive carries RECV_WR_ID, every send a smaller id.
            let receive = wc.wr_id() == RECV_WR_ID;
            *slot = match wc.error() {
                Some((status, _vendor)) => Wc::Failed {
                    qp_num: wc.qp_num,
                    status,
                    receive,
                },
                None if receive => {
                    let opcode = wc.opcode();
                    if opcode == ffi::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM {
                        Wc::Received {
                            qp_num: wc.qp_num,
                            imm: u32::from_be(wc.imm_data),
                            len: wc.len() as u32,
                        }
                    } else {
                        Wc::Unexpected {
                            qp_num: wc.qp_num,
                            opcode,
                        }
                    }
                }
                None => Wc::Sent {
                    qp_num: wc.qp_num,
                    wr_id: wc.wr_id(),
                },
            };
        }
        Ok(n as usize)
    }

    /// Asks for an event on the channel at the next completion.
    pub fn arm(&self) -> Result<(), VerbsError> {
        // SAFETY: the CQ is live.
        let rc = unsafe {
            let notify = (*(*self.cq).context)
                .ops
                .req_notify_cq
                .expect("provider implements req_notify_cq");
            notify(self.cq, 0)
        };
        if rc != 0 {
            return Err(failed_with("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// The completion channel's descriptor (non-blocking): readable when an armed CQ has a
    /// completion.
    pub fn channel_fd(&self) -> RawFd {
        // SAFETY: the channel is live; `fd` is immutable.
        unsafe { (*self.channel).fd }
    }

    /// Consumes and acknowledges the pending channel events; returns whether there was one.
    pub fn take_events(&self) -> bool {
        let mut got = false;
        loop {
            let mut cq = ptr::null_mut();
            let mut cq_ctx = ptr::null_mut();
            // SAFETY: the channel is live and non-blocking; out-pointers valid.
            let rc = unsafe { ffi::ibv_get_cq_event(self.channel, &mut cq, &mut cq_ctx) };
            if rc != 0 {
                return got;
            }
            got = true;
            // SAFETY: one event got from this channel, for our CQ, acknowledged once.
            unsafe { ffi::ibv_ack_cq_events(cq, 1) };
        }
    }

    /// The protection domain of the shared receive queue (and of the queue pairs using it).
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    fn context(&self) -> &Arc<Context> {
        self.pd.context()
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: queue pairs using this CQ and SRQ hold an `Arc` of the owner and are gone;
        // every handle is destroyed once, dependents first.
        unsafe {
            if !self.srq.is_null() {
                ffi::ibv_destroy_srq(self.srq);
            }
            if !self.cq.is_null() {
                ffi::ibv_destroy_cq(self.cq);
            }
            if !self.channel.is_null() {
                ffi::ibv_destroy_comp_channel(self.channel);
            }
        }
    }
}

/// What a peer needs to connect its queue pair to ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QpAddress {
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Queue pair number.
    pub qpn: u32,
    /// Initial packet sequence number.
    pub psn: u32,
    /// GID (RoCE and routed InfiniBand).
    pub gid: [u8; 16],
    /// The sender's active MTU (`ibv_mtu`); the path uses the smaller of the two.
    pub mtu: u32,
}

/// A reliable-connected queue pair whose receives come from a [`Cq`]'s shared receive queue
/// and whose completions go to that CQ; it lives in the CQ's protection domain.
pub struct QueuePair {
    qp: *mut ffi::ibv_qp,
    cq: Arc<Cq>,
    psn: u32,
    max_inline: u32,
    max_send_wr: u32,
}

// SAFETY: posting to a QP is thread-safe in libibverbs providers; the handle is destroyed once.
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// Creates an RC queue pair in `cq`'s protection domain of (at least) `send_depth` send
    /// work requests, asking for `max_inline` bytes of inline data (the device may grant less,
    /// down to none), and moves it to INIT.
    pub fn new(cq: &Arc<Cq>, send_depth: u32, max_inline: u32) -> Result<QueuePair, VerbsError> {
        let ctx = cq.context();
        let create = |inline: u32| {
            let mut attr = ffi::ibv_qp_init_attr {
                qp_context: ptr::null_mut(),
                send_cq: cq.cq,
                recv_cq: cq.cq,
                srq: cq.srq,
                cap: ffi::ibv_qp_cap {
                    max_send_wr: send_depth,
                    max_recv_wr: 0,
                    max_send_sge: 1,
                    max_recv_sge: 0,
                    max_inline_data: inline,
                },
                qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
                sq_sig_all: 0,
            };
            // SAFETY: PD, CQ and SRQ are live (held through `cq`; the SRQ is in this PD);
            // `attr` is valid.
            let qp = unsafe { ffi::ibv_create_qp(cq.pd.pd, &mut attr) };
            (qp, attr.cap)
        };
        let (mut qp, mut granted) = create(max_inline);
        if qp.is_null() && max_inline > 0 {
            (qp, granted) = create(0);
        }
        if qp.is_null() {
            return Err(failed("ibv_create_qp"));
        }
        let me = QueuePair {
            qp,
            cq: cq.clone(),
            psn: psn(),
            max_inline: granted.max_inline_data,
            max_send_wr: granted.max_send_wr,
        };
        if me.max_send_wr < send_depth {
            return Err(VerbsError::Call {
                call: "ibv_create_qp",
                source: io::Error::other(format!(
                    "asked for {send_depth} send work requests, granted {}",
                    me.max_send_wr
                )),
            });
        }
        // SAFETY: zero is a valid bit pattern for every field of ibv_qp_attr.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num = ctx.port;
        attr.qp_access_flags = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        use ffi::ibv_qp_attr_mask as M;
        me.modify(
            &mut attr,
            M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS,
            "ibv_modify_qp(INIT)",
        )?;
        Ok(me)
    }

    fn modify(
        &self,
        attr: &mut ffi::ibv_qp_attr,
        mask: ffi::ibv_qp_attr_mask,
        what: &'static str,
    ) -> Result<(), VerbsError> {
        // SAFETY: the QP is live; `attr` is valid for the fields `mask` names.
        let rc = unsafe { ffi::ibv_modify_qp(self.qp, attr, mask.0 as i32) };
        if rc != 0 {
            return Err(failed_with(what, rc));
        }
        Ok(())
    }

    /// Moves the queue pair to the error state: from here on the device drops what the peer
    /// sends it (incoming `RDMA_WRITE`s do not land) and flushes our outstanding work requests
    /// with errors.
    pub fn fail(&self) -> Result<(), VerbsError> {
        // SAFETY: zero is a valid bit pattern for every field of ibv_qp_attr.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_ERR;
        self.modify(
            &mut attr,
            ffi::ibv_qp_attr_mask::IBV_QP_STATE,
            "ibv_modify_qp(ERR)",
        )
    }

    /// Our address, for the peer.
    pub fn address(&self) -> QpAddress {
        let ctx = self.cq.context();
        QpAddress {
            lid: ctx.port_info.lid,
            // SAFETY: a live QP; `qp_num` is immutable.
            qpn: unsafe { (*self.qp).qp_num },
            psn: self.psn,
            gid: ctx.gid,
            mtu: ctx.port_info.active_mtu,
        }
    }

    /// Queue pair number.
    pub fn qp_num(&self) -> u32 {
        // SAFETY: a live QP; `qp_num` is immutable.
        unsafe { (*self.qp).qp_num }
    }

    /// Inline data the device granted, bytes.
    pub fn max_inline(&self) -> u32 {
        self.max_inline
    }

    /// Send work requests the device granted (at least the number asked for).
    pub fn max_send_wr(&self) -> u32 {
        self.max_send_wr
    }

    /// Connects to `peer`: INIT → RTR → RTS.
    pub fn connect(&self, peer: &QpAddress) -> Result<(), VerbsError> {
        let ctx = self.cq.context();
        use ffi::ibv_qp_attr_mask as M;
        // SAFETY: zero is a valid bit pattern for every field of ibv_qp_attr.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_RTR;
        attr.path_mtu = ctx.port_info.active_mtu.min(peer.mtu).clamp(1, 5);
        attr.dest_qp_num = peer.qpn;
        attr.rq_psn = peer.psn;
        attr.max_dest_rd_atomic = 1;
        attr.min_rnr_timer = 12;
        attr.ah_attr.dlid = peer.lid;
        attr.ah_attr.sl = 0;
        attr.ah_attr.src_path_bits = 0;
        attr.ah_attr.port_num = ctx.port;
        // Route by GID always (required on RoCE, harmless on InfiniBand within a subnet).
        attr.ah_attr.is_global = 1;
        attr.ah_attr.grh.dgid = ffi::ibv_gid { raw: peer.gid };
        attr.ah_attr.grh.sgid_index = ctx.gid_index;
        attr.ah_attr.grh.hop_limit = 1;
        self.modify(
            &mut attr,
            M::IBV_QP_STATE
                | M::IBV_QP_AV
                | M::IBV_QP_PATH_MTU
                | M::IBV_QP_DEST_QPN
                | M::IBV_QP_RQ_PSN
                | M::IBV_QP_MAX_DEST_RD_ATOMIC
                | M::IBV_QP_MIN_RNR_TIMER,
            "ibv_modify_qp(RTR)",
        )?;
        // SAFETY: as above.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_RTS;
        attr.timeout = 14;
        attr.retry_cnt = 7;
        // 7: retry forever while the peer has no receive posted (it replenishes them).
        attr.rnr_retry = 7;
        attr.sq_psn = self.psn;
        attr.max_rd_atomic = 1;
        self.modify(
            &mut attr,
            M::IBV_QP_STATE
                | M::IBV_QP_TIMEOUT
                | M::IBV_QP_RETRY_CNT
                | M::IBV_QP_RNR_RETRY
                | M::IBV_QP_SQ_PSN
                | M::IBV_QP_MAX_QP_RD_ATOMIC,
            "ibv_modify_qp(RTS)",
        )
    }

    /// Posts one `RDMA_WRITE_WITH_IMM` (a plain `RDMA_WRITE` when `w.imm` is `None`) of `w.len` bytes from `w.local` (registered under
    /// `w.lkey`, or anything when sent inline) to the peer's `w.remote_addr` under `w.rkey`. Inline when
    /// `len` fits the granted inline size (the bytes are copied before this returns);
    /// otherwise the device reads `local` later, so it must stay unchanged until the peer has
    /// seen the completion. `signaled` asks for a send completion.
    ///
    /// # Safety
    /// `local..local + len` must be readable, and (when not inline) lie in memory registered
    /// under `lkey` that stays registered until the write completes; `remote_addr..+len`
    /// must lie in the peer's region registered under `rkey` (the peer's device rejects it
    /// otherwise, and the queue pair goes to the error state).
    pub unsafe fn write_with_imm(&self, w: &RdmaWrite) -> Result<(), VerbsError> {
        let RdmaWrite {
            local,
            len,
            lkey,
            remote_addr,
            rkey,
            imm,
            signaled,
            wr_id,
        } = *w;
        let mut sge = ffi::ibv_sge {
            addr: local as u64,
            length: len,
            lkey,
        };
        let mut flags = 0;
        if signaled {
            flags |= ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if len <= self.max_inline {
            flags |= ffi::ibv_send_flags::IBV_SEND_INLINE.0;
        }
        // SAFETY: zero is a valid bit pattern for every field of ibv_send_wr (null pointers,
        // integers, unions of integers).
        let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.next = ptr::null_mut();
        wr.sg_list = if len == 0 { ptr::null_mut() } else { &mut sge };
        wr.num_sge = i32::from(len != 0);
        match imm {
            Some(imm) => {
                wr.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
                wr.__bindgen_anon_1.imm_data = imm.to_be();
            }
            None => wr.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
        }
        wr.send_flags = flags;
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        // SAFETY: `wr` and `sge` are valid for the call; the caller guarantees the memory.
        unsafe { self.post_send(&mut wr) }
    }

    /// Posts one send work request.
    ///
    /// # Safety
    /// `wr` (and what it points to) must be a valid, single work request, and any memory it
    /// names must satisfy the device's rules for it until it completes.
    unsafe fn post_send(&self, wr: &mut ffi::ibv_send_wr) -> Result<(), VerbsError> {
        let mut bad = ptr::null_mut();
        // SAFETY: the QP is live; the provider copies `wr` (and inline data) before
        // returning; the caller guarantees the rest.
        let rc = unsafe {
            let post = (*(*self.qp).context)
                .ops
                .post_send
                .expect("provider implements post_send");
            post(self.qp, wr, &mut bad)
        };
        if rc != 0 {
            return Err(failed_with("ibv_post_send", rc));
        }
        Ok(())
    }
}

impl QueuePair {
    /// Posts a signalled zero-length `RDMA_WRITE` (no immediate: the peer sees nothing) with
    /// id `wr_id` to `remote_addr` under `rkey`: its completion says every earlier work
    /// request of this queue pair is done.
    pub fn post_fence(&self, wr_id: u64, remote_addr: u64, rkey: u32) -> Result<(), VerbsError> {
        // SAFETY: zero is a valid bit pattern for every field of ibv_send_wr.
        let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.next = ptr::null_mut();
        wr.sg_list = ptr::null_mut();
        wr.num_sge = 0;
        wr.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
        wr.send_flags = ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        // SAFETY: a valid single request; a zero-length write reads no local memory.
        unsafe { self.post_send(&mut wr) }
    }

    /// Posts a zero-length `SEND` with id `wr_id`: it consumes one of the peer's receives,
    /// which completes as a plain receive (`IBV_WC_RECV`). rfaas never sends one (its protocol
    /// is writes with immediates); it is here to act as a peer that breaks the protocol.
    pub fn post_empty_send(&self, wr_id: u64, signaled: bool) -> Result<(), VerbsError> {
        // SAFETY: zero is a valid bit pattern for every field of ibv_send_wr.
        let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.next = ptr::null_mut();
        wr.sg_list = ptr::null_mut();
        wr.num_sge = 0;
        wr.opcode = ffi::ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = if signaled {
            ffi::ibv_send_flags::IBV_SEND_SIGNALED.0
        } else {
            0
        };
        // SAFETY: a valid single request; a zero-length send reads no local memory.
        unsafe { self.post_send(&mut wr) }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once; its CQ and SRQ outlive it (held in `cq`).
        unsafe { ffi::ibv_destroy_qp(self.qp) };
    }
}

/// One `RDMA_WRITE_WITH_IMM` or `RDMA_WRITE` work request (see [`QueuePair::write_with_imm`]).
#[derive(Debug, Clone, Copy)]
pub struct RdmaWrite {
    /// Source bytes.
    pub local: *const u8,
    /// How many.
    pub len: u32,
    /// Key of the registration holding the source (ignored when sent inline).
    pub lkey: u32,
    /// Destination address in the peer's region.
    pub remote_addr: u64,
    /// Key of the peer's region.
    pub rkey: u32,
    /// Immediate, in host order (`RDMA_WRITE_WITH_IMM`); `None`: a plain `RDMA_WRITE`, which
    /// the peer does not see.
    pub imm: Option<u32>,
    /// Ask for a send completion.
    pub signaled: bool,
    /// Id reported with the send completion.
    pub wr_id: u64,
}

/// A random initial packet sequence number (24 bits).
fn psn() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: `b` is 4 writable bytes; getrandom only writes into them.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        b = t.to_le_bytes();
    }
    u32::from_le_bytes(b) & 0x00ff_ffff
}
