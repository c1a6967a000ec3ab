// Paths relative to the function's module (`super::`, `self::`) mean the same in the stub
// module, which lives one level deeper: in types, in generic arguments, and in array lengths.
// `SIGNATURE` shows them as written.
use std::fmt;

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
pub struct P {
    pub x: u32,
}

#[derive(Debug)]
pub struct E;

impl fmt::Display for E {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E")
    }
}

pub const N: usize = 3;

/// A trait naming a payload and a length, for qualified paths (`<T as super::Tr>::X`).
pub trait Tr {
    type X;
    const LEN: usize;
}

impl Tr for P {
    type X = P;
    const LEN: usize = 2;
}

mod inner {
    #[derive(Clone, Copy, rfaas::Payload)]
    #[repr(C)]
    pub struct Q(pub u16, pub u16);

    pub const M: usize = 2;

    #[rfaas::function]
    pub fn f(
        p: super::P,
        ps: &[super::P],
        q: self::Q,
        arr: [u8; super::N],
        out: &mut [[self::Q; self::M]],
    ) -> Result<u32, super::E> {
        let _ = (ps, q, arr, out);
        Ok(p.x)
    }

    /// Qualified paths: the trait's path is rebased, and the item after it kept.
    #[rfaas::function]
    pub fn h(p: <super::P as super::Tr>::X, xs: [u8; <super::P as super::Tr>::LEN]) -> u32 {
        let _ = xs;
        p.x
    }

    pub mod deeper {
        #[rfaas::function]
        pub fn g(p: super::super::P, xs: [u16; super::super::N + super::M]) -> super::Q {
            let _ = xs;
            super::Q(p.x as u16, 0)
        }
    }
}

fn main() {
    assert_eq!(
        inner::f::SIGNATURE,
        "fn f(p: super::P, ps: &[super::P], q: self::Q, arr: [u8; super::N], out: &mut [[self::Q; self::M]]) -> Result<u32, super::E>"
    );
    assert_eq!(
        inner::deeper::g::SIGNATURE,
        "fn g(p: super::super::P, xs: [u16; super::super::N + super::M]) -> super::Q"
    );
    let p = P { x: 7 };
    let mut out = [[inner::Q(0, 0); 2]];
    let _ = inner::f::call(p, &[p], inner::Q(1, 2), [0; 3], &mut out);
    let _ = inner::deeper::g::call(p, [0; 5]);
    assert_eq!(
        inner::h::SIGNATURE,
        "fn h(p: <super::P as super::Tr>::X, xs: [u8; <super::P as super::Tr>::LEN]) -> u32"
    );
    let _ = inner::h::call(p, [0; 2]);
}
