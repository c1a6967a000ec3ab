struct S;

impl S {
    #[rfaas::function]
    fn m(&self) {}
}

fn main() {}
