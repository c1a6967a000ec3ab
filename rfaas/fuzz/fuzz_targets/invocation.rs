//! Whatever a client writes into an executor's input slot: the real worker (`serve_tcp_session`,
//! `FunctionLibrary::invoke`, the loaded library's trampolines) must drop what names no
//! invocation, refuse what breaks the header rules with the status `docs/protocol.md` names,
//! and otherwise answer exactly as the function's trampoline run here on the same bytes; the
//! session must survive every input (a sentinel `noop` is answered after each one).
//!
//! Input: byte 0 picks the slot (low 2 bits) or, with bit 7, 4 raw immediate bytes follow;
//! the rest is written into the slot (header, then argument layout) and its length is the
//! completion's length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas::Status;
use rfaas::abi::FunctionEntry;
use rfaas::wire::{
    HEADER_LEN, InvocationHeader, PlacedOutput, PlacedOutputs, response_imm, split_response_imm,
};
use rfaas_fuzz::session::{self, SLOT_SIZE, SLOTS, Session};
use rfaas_fuzz::{Buf, Handling, SHAPES};
use std::sync::{Mutex, OnceLock};

struct State {
    session: Session,
    local: Vec<&'static FunctionEntry>,
    noop: u32,
    fault: u32,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> &'static Mutex<State> {
    STATE.get_or_init(|| {
        let local = rfaas_fuzz::registered();
        let session = Session::start();
        let names: Vec<_> = local.iter().map(|e| e.name).collect();
        assert_eq!(
            session.functions, names,
            "executor and local manifests differ"
        );
        let index = |n| names.iter().position(|&m| m == n).expect("function") as u32;
        Mutex::new(State {
            noop: index("noop"),
            fault: index("fault"),
            session,
            local,
        })
    })
}

fuzz_target!(
    init: {
        rfaas_fuzz::install_panic_filter();
        let _ = state();
    },
    |data: &[u8]| {
        let st = state().lock().unwrap_or_else(|e| e.into_inner());
        let Some((&b0, rest)) = data.split_first() else { return };
        let (imm, mut bytes) = if b0 & 0x80 != 0 && rest.len() >= 4 {
            (u32::from_le_bytes(rest[..4].try_into().unwrap()), rest[4..].to_vec())
        } else {
            (u32::from(b0 & 3), rest.to_vec())
        };
        let slot = if imm < SLOTS { imm } else { u32::from(b0 & 3) };
        let room = ((SLOTS - slot) * SLOT_SIZE) as usize;
        bytes.truncate(room);
        // The library's `fault` would sleep, allocate or panic (printing from the library's own
        // runtime) on request: run it in mode 0 here (the trampolines target covers the rest).
        if bytes.len() >= HEADER_LEN + 4 && bytes[4..8] == st.fault.to_le_bytes() {
            bytes[HEADER_LEN..HEADER_LEN + 4].fill(0);
        }
        let s = &st.session;
        let expect = rfaas_fuzz::handling(
            imm,
            bytes.len(),
            &bytes,
            SLOTS,
            SLOT_SIZE as usize,
            session::RESULT_LEN,
            st.local.len(),
        );
        s.write(slot, &bytes, imm);

        // The sentinel: a noop in the next slot, answered after whatever the input caused.
        let sentinel_slot = (slot + 1) % SLOTS;
        let fuzz_id = match expect {
            Handling::Refuse { id, .. } => id,
            Handling::Invoke { header, .. } => header.id.get(),
            Handling::Drop => u32::MAX,
        };
        let sentinel_id = if fuzz_id == 0x5e_17e1 { 0x1e_57e1 } else { 0x5e_17e1 };
        let sentinel = InvocationHeader {
            id: sentinel_id.into(),
            function: st.noop.into(),
            input_len: 0.into(),
            result_offset: (sentinel_slot * SLOT_SIZE).into(),
            result_cap: 0.into(),
            flags: 0.into(),
        };
        s.write(sentinel_slot, &session::invocation(&sentinel, &[]), sentinel_slot);

        match expect {
            Handling::Drop => {}
            Handling::Refuse { id, status } => {
                let c = s.next();
                assert_eq!(
                    (split_response_imm(c.imm), c.len),
                    ((id, status.as_u32()), 0),
                    "expected a refusal {status:?} of invocation {id}"
                );
            }
            Handling::Invoke {
                header,
                args_len,
                placed,
            } => check_invocation(&st, &bytes, &header, args_len, placed.as_ref()),
        }
        let c = s.next();
        assert_eq!(
            (c.imm, c.len),
            (response_imm(sentinel_id, Status::Ok), 0),
            "expected the sentinel's answer (after {expect:?})"
        );
    }
);

/// Runs the function locally on the same bytes (less a placement list), at the executor's
/// alignments (input at slot + 24: an odd multiple of 8; output staging at a slot start), twice
/// with different output fills so that bytes the function leaves alone (stale staging bytes in
/// the executor) are not compared. Placed ranges must land where their list says (where no
/// later write covers them).
fn check_invocation(
    st: &State,
    bytes: &[u8],
    h: &InvocationHeader,
    args_len: usize,
    placed: Option<&PlacedOutputs>,
) {
    let f = h.function.get() as usize;
    let cap = h.result_cap.get() as usize;
    let mut input = Buf::new(args_len, 8, 0);
    input
        .bytes_mut()
        .copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + args_len]);
    let run = |fill| {
        let mut out = Buf::new(cap, 0, fill);
        let o = rfaas_fuzz::call_trampoline(st.local[f].trampoline, input.bytes(), out.bytes_mut());
        (o, out.bytes().to_vec())
    };
    let ((o, out0), (o1, out1)) = (run(0x00), run(0xff));
    assert_eq!(o, o1, "`{}` is not deterministic", SHAPES[f].name);
    rfaas_fuzz::check_outcome(&o, cap, &out0);
    let c = st.session.next();
    let (id, status) = split_response_imm(c.imm);
    assert_eq!(id, h.id.get(), "answer to another invocation");
    let (want_status, want_len) = match placed {
        Some(list) if o.status == Status::Ok.as_u32() => {
            let (s, n) = rfaas_fuzz::placed_answer(list, o.len);
            (s.as_u32(), n)
        }
        _ => (o.status, o.len),
    };
    assert_eq!(
        (status, c.len as usize),
        (want_status, want_len),
        "executor and local trampoline of `{}` disagree",
        SHAPES[f].name
    );
    let off = h.result_offset.get() as usize;
    if let Some(list) = placed
        && want_status == Status::Ok.as_u32()
    {
        // Each range's bytes at its destination, unless a later range or the answer (the
        // first `want_len` bytes at `off`) was written over them.
        let ranges = list.ranges();
        let span = |r: &PlacedOutput| {
            let d = off + r.dest.get() as usize;
            d..d + r.len.get() as usize
        };
        for (i, r) in ranges.iter().enumerate() {
            let at = r.at.get() as usize;
            let got = st.session.result(span(r).start, r.len.get() as usize);
            for (j, &b) in got.iter().enumerate() {
                let pos = span(r).start + j;
                let covered = ranges[i + 1..].iter().any(|l| span(l).contains(&pos))
                    || (off..off + want_len).contains(&pos);
                if !covered && out0[at + j] == out1[at + j] {
                    assert_eq!(b, out0[at + j], "placed byte {j} of range {i} differs");
                }
            }
        }
    }
    let got = st.session.result(off, want_len);
    for (i, &b) in got.iter().enumerate() {
        if out0[i] == out1[i] {
            assert_eq!(
                b, out0[i],
                "byte {i} of the output of `{}` differs",
                SHAPES[f].name
            );
        }
    }
}
