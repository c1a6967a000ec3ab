// Type texts in signatures and payload shapes do not depend on how the source is spaced:
// rustfmt-ing one copy of a library does not change its fingerprints. Tokens syn keeps as they
// came (macro invocations in array lengths and field types) are where spacing showed.
#![allow(unused_braces)]

macro_rules! len {
    ($($t:tt)*) => { $($t)* };
}

macro_rules! arr {
    ($t:ty; $n:expr) => { [$t; $n] };
}

#[rustfmt::skip]
mod a {
    #[derive(Clone, Copy, rfaas::Payload)]
    #[repr(C)]
    pub struct S { pub x: [f64;3], pub y: [[u8;2];4], pub z: arr!(u64;len!(1+1)) }

    #[rfaas::function]
    pub fn g(x: [u8;4], s: S, ys: &[[u16;len!(2*2)]], out: &mut [[u32;{1+1}]]) -> Result<[u8;2], ::std::string::String> {
        let _ = (x, s, ys, out);
        Ok([0;2])
    }
}

#[rustfmt::skip]
mod b {
    #[derive(Clone, Copy, rfaas::Payload)]
    #[repr(C)]
    pub struct S {
        pub x : [ f64 ; 3 ],
        pub y : [ [ u8 ; 2 ] ; 4 ],
        pub z : arr! ( u64 ; len! ( 1 + 1 ) ),
    }

    #[rfaas::function]
    pub fn g(
        x : [ u8 ; 4 ],
        s : S,
        ys : & [ [ u16 ; len! ( 2 * 2 ) ] ],
        out : & mut [ [ u32 ; { 1 + 1 } ] ],
    ) -> Result < [ u8 ; 2 ] , :: std :: string :: String > {
        let _ = (x, s, ys, out);
        Ok([0; 2])
    }
}

fn main() {
    use rfaas::Payload;
    assert_eq!(<a::S as Payload>::SHAPE, <b::S as Payload>::SHAPE);
    assert_eq!(a::g::FINGERPRINT, b::g::FINGERPRINT);
    assert_eq!(a::g::SIGNATURE, b::g::SIGNATURE);
    assert_eq!(
        a::g::SIGNATURE,
        "fn g(x: [u8; 4], s: S, ys: &[[u16; len!(2 * 2)]], out: &mut [[u32; { 1 + 1 }]]) -> Result<[u8; 2], ::std::string::String>"
    );
}
