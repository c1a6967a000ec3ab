// `RemoteCall` is an unsafe trait: the lease trusts what `encode` says about in-place outputs.
use rfaas::{CallError, EncodeError, Encoded, Placement, RemoteCall, Status};

struct X;

impl RemoteCall for X {
    type Output = ();
    const NAME: &'static str = "x";
    const FINGERPRINT: u64 = 0;

    fn layout(&self, _: &Placement) -> Result<Encoded, EncodeError> {
        Ok(Encoded {
            input_len: 0,
            output_len: 0,
            in_place: false,
            in_place_start: 0,
        })
    }

    fn encode(&self, _: &mut [u8], placement: &Placement) -> Result<Encoded, EncodeError> {
        self.layout(placement)
    }

    fn decode(self, _: Status, _: &[u8], _: &Placement) -> Result<(), CallError> {
        Ok(())
    }
}

fn main() {}
