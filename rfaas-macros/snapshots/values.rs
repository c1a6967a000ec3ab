fn add(a: u64, b: i32) -> u64 {
    a + b as u64
}
///Remote stub of [`add`](fn@add): `fn add(a: u64, b: i32) -> u64`.
#[allow(non_camel_case_types, non_snake_case, unused_imports, unused_mut, clippy::all)]
mod add {
    use super::*;
    const _: () = {
        ::rfaas::__private::require_payload::<u64>();
        ::rfaas::__private::require_payload::<i32>();
        ::rfaas::__private::require_payload::<u64>();
    };
    /// Name of the function in the library manifest.
    pub(super) const NAME: &str = "add";
    /// The function's Rust signature.
    pub(super) const SIGNATURE: &str = "fn add(a: u64, b: i32) -> u64";
    /// Layout fingerprint: names, kinds, types, sizes, alignments and shapes.
    pub(super) const FINGERPRINT: u64 = ::rfaas::__private::Fingerprint::new()
        .str("add")
        .str("a")
        .u64(1u64)
        .ty(
            "u64",
            ::rfaas::__private::size_of::<u64>(),
            ::core::mem::align_of::<u64>(),
            <u64 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("b")
        .u64(1u64)
        .ty(
            "i32",
            ::rfaas::__private::size_of::<i32>(),
            ::core::mem::align_of::<i32>(),
            <i32 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("->")
        .u64(1u64)
        .ty(
            "u64",
            ::rfaas::__private::size_of::<u64>(),
            ::core::mem::align_of::<u64>(),
            <u64 as ::rfaas::__private::Payload>::SHAPE,
        )
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
    pub(super) struct __rfaas_Args {
        pub a: [u8; ::rfaas::__private::size_of::<u64>()],
        pub b: [u8; ::rfaas::__private::size_of::<i32>()],
    }
    ///A typed invocation of `add`, built by [`call`].
    pub(super) struct Call {
        pub a: u64,
        pub b: i32,
    }
    /// Builds a typed invocation with the function's own parameters.
    pub(super) fn call(a: u64, b: i32) -> Call {
        Call { a, b }
    }
    /// Invokes the function on `lease`: the returned invocation is a future (`.await`)
    /// with a blocking `wait()`.
    pub(super) fn invoke<'__rfaas_a>(
        __rfaas_lease: &'__rfaas_a ::rfaas::__private::Lease,
        a: u64,
        b: i32,
    ) -> ::rfaas::__private::Invocation<'__rfaas_a, Call> {
        __rfaas_lease.invoke(Call { a, b })
    }
    impl Call {
        fn __rfaas_outputs(
            &self,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::OutputLayout {
            {
                let _ = __rfaas_placement;
                ::rfaas::__private::OutputLayout::new(
                    ::rfaas::__private::size_of::<u64>(),
                )
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
            ::rfaas::__private::put_value::<u64>(&mut __rfaas_args.a, &self.a);
            ::rfaas::__private::put_value::<i32>(&mut __rfaas_args.b, &self.b);
            ::rfaas::__private::Ok(__rfaas_enc.finish(&__rfaas_args, &__rfaas_out))
        }
    }
    impl ::rfaas::__private::RemoteCall for Call {
        type Output = u64;
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
            __rfaas_dec.value::<u64>()
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
                        ::rfaas::__private::size_of::<u64>(),
                    )?;
                    let __rfaas_p0: u64 = ::rfaas::__private::get_value::<
                        u64,
                    >(&__rfaas_args.a)?;
                    let __rfaas_p1: i32 = ::rfaas::__private::get_value::<
                        i32,
                    >(&__rfaas_args.b)?;
                    let __rfaas_end = __rfaas_cur.end();
                    let __rfaas_ret = super::add(__rfaas_p0, __rfaas_p1);
                    ::rfaas::__private::finish_value::<
                        u64,
                    >(__rfaas_output, __rfaas_end, __rfaas_ret)
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
