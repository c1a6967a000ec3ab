pub fn noop() {}
///Remote stub of [`noop`](fn@noop): `fn noop()`.
#[allow(non_camel_case_types, non_snake_case, unused_imports, unused_mut, clippy::all)]
pub mod noop {
    use super::*;
    const _: () = {};
    /// Name of the function in the library manifest.
    pub const NAME: &str = "noop";
    /// The function's Rust signature.
    pub const SIGNATURE: &str = "fn noop()";
    /// Layout fingerprint: names, kinds, types, sizes, alignments and shapes.
    pub const FINGERPRINT: u64 = ::rfaas::__private::Fingerprint::new()
        .str("noop")
        .str("->")
        .u64(0)
        .finish();
    /// The fixed argument layout at the start of the input buffer.
    #[derive(
        ::rfaas::__private::zerocopy::FromBytes,
        ::rfaas::__private::zerocopy::IntoBytes,
        ::rfaas::__private::zerocopy::Immutable,
        ::rfaas::__private::zerocopy::KnownLayout,
        ::rfaas::__private::zerocopy::Unaligned
    )]
    #[zerocopy(crate = "::rfaas::__private::zerocopy")]
    #[repr(C)]
    pub struct __rfaas_Args {}
    ///A typed invocation of `noop`, built by [`call`].
    pub struct Call {}
    /// Builds a typed invocation with the function's own parameters.
    pub fn call() -> Call {
        Call {}
    }
    /// Invokes the function on `lease`: the returned invocation is a future (`.await`)
    /// with a blocking `wait()`.
    pub fn invoke<'__rfaas_a>(
        __rfaas_lease: &'__rfaas_a ::rfaas::__private::Lease,
    ) -> ::rfaas::__private::Invocation<'__rfaas_a, Call> {
        __rfaas_lease.invoke(Call {})
    }
    impl Call {
        fn __rfaas_outputs(
            &self,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::OutputLayout {
            {
                let _ = __rfaas_placement;
                ::rfaas::__private::OutputLayout::new(0usize)
            }
        }
        fn __rfaas_encode(
            &self,
            __rfaas_buf: ::rfaas::__private::Option<&mut [u8]>,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::Result<
            ::rfaas::__private::Encoded,
            ::rfaas::__private::EncodeError,
        > {
            let mut __rfaas_enc = ::rfaas::__private::Encoder::new::<
                __rfaas_Args,
            >(__rfaas_buf)?;
            let mut __rfaas_out = self.__rfaas_outputs(__rfaas_placement);
            let mut __rfaas_args = <__rfaas_Args as ::rfaas::__private::zerocopy::FromZeros>::new_zeroed();
            ::rfaas::__private::Ok(__rfaas_enc.finish(&__rfaas_args, &__rfaas_out))
        }
    }
    impl ::rfaas::__private::RemoteCall for Call {
        type Output = ();
        const NAME: &'static str = NAME;
        const FINGERPRINT: u64 = FINGERPRINT;
        fn layout(
            &self,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::Result<
            ::rfaas::__private::Encoded,
            ::rfaas::__private::EncodeError,
        > {
            self.__rfaas_encode(::rfaas::__private::None, __rfaas_placement)
        }
        fn encode(
            &self,
            __rfaas_buf: &mut [u8],
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::Result<
            ::rfaas::__private::Encoded,
            ::rfaas::__private::EncodeError,
        > {
            self.__rfaas_encode(::rfaas::__private::Some(__rfaas_buf), __rfaas_placement)
        }
        fn decode(
            self,
            __rfaas_status: ::rfaas::__private::Status,
            __rfaas_output: &[u8],
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::Result<Self::Output, ::rfaas::__private::CallError> {
            let __rfaas_dec = ::rfaas::__private::Decoder::new(
                __rfaas_status,
                __rfaas_output,
            )?;
            let mut __rfaas_out = self.__rfaas_outputs(__rfaas_placement);
            ::rfaas::__private::Ok(())
        }
    }
    unsafe extern "C" fn __rfaas_trampoline(
        __rfaas_in_ptr: *const u8,
        __rfaas_in_len: usize,
        __rfaas_out_ptr: *mut u8,
        __rfaas_out_cap: usize,
        __rfaas_out_len: *mut usize,
    ) -> u32 {
        unsafe {
            ::rfaas::__private::run_trampoline(
                __rfaas_in_ptr,
                __rfaas_in_len,
                __rfaas_out_ptr,
                __rfaas_out_cap,
                __rfaas_out_len,
                |
                    __rfaas_input: &[u8],
                    __rfaas_output: &mut [u8],
                | -> ::rfaas::__private::Result<usize, ::rfaas::__private::Failure> {
                    let (__rfaas_args, __rfaas_in) = ::rfaas::__private::Input::args::<
                        __rfaas_Args,
                    >(__rfaas_input)?;
                    let _ = &__rfaas_in;
                    let mut __rfaas_cur = ::rfaas::__private::OutputCursor::new(
                        &mut *__rfaas_output,
                        0usize,
                    )?;
                    let __rfaas_end = __rfaas_cur.end();
                    let __rfaas_ret = super::noop();
                    {
                        let () = __rfaas_ret;
                        ::rfaas::__private::finish_unit(__rfaas_end)
                    }
                },
            )
        }
    }
    #[::rfaas::__private::linkme::distributed_slice(::rfaas::__private::FUNCTIONS)]
    #[linkme(crate = ::rfaas::__private::linkme)]
    static __RFAAS_ENTRY: ::rfaas::__private::FunctionEntry = ::rfaas::__private::FunctionEntry {
        name: NAME,
        signature: SIGNATURE,
        fingerprint: FINGERPRINT,
        trampoline: __rfaas_trampoline,
    };
}
