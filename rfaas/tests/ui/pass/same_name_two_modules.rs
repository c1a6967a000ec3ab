mod a {
    #[rfaas::function]
    pub fn step(x: u32) -> u32 {
        x + 1
    }
}

mod b {
    #[rfaas::function]
    pub fn step(x: u64) -> u64 {
        x + 2
    }
}

fn main() {
    assert_eq!(a::step::NAME, "step");
    assert_eq!(b::step::NAME, "step");
    assert_ne!(a::step::FINGERPRINT, b::step::FINGERPRINT);
    let _ = (a::step::call(1), b::step::call(1));
}
