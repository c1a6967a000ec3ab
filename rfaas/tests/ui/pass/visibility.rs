mod kernels {
    #[rfaas::function]
    pub(crate) fn twice(x: i32) -> i32 {
        x * 2
    }
}

fn main() {
    assert_eq!(kernels::twice(2), 4);
    assert_eq!(kernels::twice::NAME, "twice");
    let _ = kernels::twice::call(2);
}
