pub(crate) fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), String> {
    Ok(())
}
///Remote stub of [`axpy`](fn@axpy): `fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), String>`.
#[allow(non_camel_case_types, non_snake_case, unused_imports, unused_mut, clippy::all)]
pub(crate) mod axpy {
    use super::*;
    const _: () = {
        ::rfaas::__private::require_payload::<f64>();
        ::rfaas::__private::require_payload::<f64>();
        ::rfaas::__private::require_payload::<f64>();
        ::rfaas::__private::require_payload::<f64>();
        ::rfaas::__private::require_display::<String>();
    };
    /// Name of the function in the library manifest.
    pub(crate) const NAME: &str = "axpy";
    /// The function's Rust signature.
    pub(crate) const SIGNATURE: &str = "fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), String>";
    /// Layout fingerprint: names, kinds, types, sizes, alignments and shapes.
    pub(crate) const FINGERPRINT: u64 = ::rfaas::__private::Fingerprint::new()
        .str("axpy")
        .str("a")
        .u64(1u64)
        .ty(
            "f64",
            ::rfaas::__private::size_of::<f64>(),
            ::core::mem::align_of::<f64>(),
            <f64 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("x")
        .u64(2u64)
        .ty(
            "f64",
            ::rfaas::__private::size_of::<f64>(),
            ::core::mem::align_of::<f64>(),
            <f64 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("y")
        .u64(2u64)
        .ty(
            "f64",
            ::rfaas::__private::size_of::<f64>(),
            ::core::mem::align_of::<f64>(),
            <f64 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("out")
        .u64(3u64)
        .ty(
            "f64",
            ::rfaas::__private::size_of::<f64>(),
            ::core::mem::align_of::<f64>(),
            <f64 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("->")
        .u64(3)
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
    pub(crate) struct __rfaas_Args {
        pub a: [u8; ::rfaas::__private::size_of::<f64>()],
        pub x: ::rfaas::__private::SliceDesc,
        pub y: ::rfaas::__private::SliceDesc,
        pub out: ::rfaas::__private::SliceDesc,
    }
    ///A typed invocation of `axpy`, built by [`call`].
    pub(crate) struct Call<'__rfaas_a> {
        pub a: f64,
        pub x: &'__rfaas_a [f64],
        pub y: &'__rfaas_a [f64],
        pub out: &'__rfaas_a mut [f64],
    }
    /// Builds a typed invocation with the function's own parameters.
    pub(crate) fn call<'__rfaas_a>(
        a: f64,
        x: &'__rfaas_a [f64],
        y: &'__rfaas_a [f64],
        out: &'__rfaas_a mut [f64],
    ) -> Call<'__rfaas_a> {
        Call { a, x, y, out }
    }
    /// Invokes the function on `lease`: the returned invocation is a future (`.await`)
    /// with a blocking `wait()`.
    pub(crate) fn invoke<'__rfaas_a>(
        __rfaas_lease: &'__rfaas_a ::rfaas::__private::Lease,
        a: f64,
        x: &'__rfaas_a [f64],
        y: &'__rfaas_a [f64],
        out: &'__rfaas_a mut [f64],
    ) -> ::rfaas::__private::Invocation<'__rfaas_a, Call<'__rfaas_a>> {
        __rfaas_lease.invoke(Call { a, x, y, out })
    }
    impl Call<'_> {
        fn __rfaas_outputs(
            &self,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::OutputLayout {
            ::rfaas::__private::OutputLayout::placed(
                0usize,
                __rfaas_placement,
                &[(self.out.as_ptr() as usize, ::core::mem::size_of_val(&*self.out))],
            )
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
            ::rfaas::__private::put_value::<f64>(&mut __rfaas_args.a, &self.a);
            __rfaas_args.x = __rfaas_enc.input::<f64>("x", self.x)?;
            __rfaas_args.y = __rfaas_enc.input::<f64>("y", self.y)?;
            __rfaas_args.out = __rfaas_out
                .slice::<f64>("out", self.out.as_ptr() as usize, self.out.len())?;
            ::rfaas::__private::Ok(__rfaas_enc.finish(&__rfaas_args, &__rfaas_out))
        }
    }
    impl ::rfaas::__private::RemoteCall for Call<'_> {
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
            __rfaas_dec.output_into::<f64>(&mut __rfaas_out, "out", self.out)?;
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
                    let __rfaas_p0: f64 = ::rfaas::__private::get_value::<
                        f64,
                    >(&__rfaas_args.a)?;
                    let __rfaas_p1: &[f64] = __rfaas_in.slice::<f64>(__rfaas_args.x)?;
                    let __rfaas_p2: &[f64] = __rfaas_in.slice::<f64>(__rfaas_args.y)?;
                    let __rfaas_p3: &mut [f64] = __rfaas_cur
                        .slice::<f64>(__rfaas_args.out)?;
                    let __rfaas_end = __rfaas_cur.end();
                    let __rfaas_ret = super::axpy(
                        __rfaas_p0,
                        __rfaas_p1,
                        __rfaas_p2,
                        __rfaas_p3,
                    );
                    ::rfaas::__private::finish_result_unit::<
                        String,
                    >(__rfaas_end, __rfaas_ret)
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
