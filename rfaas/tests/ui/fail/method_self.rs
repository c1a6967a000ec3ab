struct S;

impl S {
    #[rfaas::function]
    fn m(self, _x: u8) {}
}

fn main() {}
