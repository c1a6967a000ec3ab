pub fn price(options: &[OptionData], prices: &mut [f32]) -> Result<u32, PriceError> {
    Ok(0)
}
///Remote stub of [`price`](fn@price): `fn price(options: &[OptionData], prices: &mut [f32]) -> Result<u32, PriceError>`.
#[allow(non_camel_case_types, non_snake_case, unused_imports, unused_mut, clippy::all)]
pub mod price {
    use super::*;
    const _: () = {
        ::rfaas::__private::require_payload::<OptionData>();
        ::rfaas::__private::require_payload::<f32>();
        ::rfaas::__private::require_payload::<u32>();
        ::rfaas::__private::require_display::<PriceError>();
    };
    /// Name of the function in the library manifest.
    pub const NAME: &str = "price";
    /// The function's Rust signature.
    pub const SIGNATURE: &str = "fn price(options: &[OptionData], prices: &mut [f32]) -> Result<u32, PriceError>";
    /// Layout fingerprint: names, kinds, types, sizes, alignments and shapes.
    pub const FINGERPRINT: u64 = ::rfaas::__private::Fingerprint::new()
        .str("price")
        .str("options")
        .u64(2u64)
        .ty(
            "OptionData",
            ::rfaas::__private::size_of::<OptionData>(),
            ::core::mem::align_of::<OptionData>(),
            <OptionData as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("prices")
        .u64(3u64)
        .ty(
            "f32",
            ::rfaas::__private::size_of::<f32>(),
            ::core::mem::align_of::<f32>(),
            <f32 as ::rfaas::__private::Payload>::SHAPE,
        )
        .str("->")
        .u64(2u64)
        .ty(
            "u32",
            ::rfaas::__private::size_of::<u32>(),
            ::core::mem::align_of::<u32>(),
            <u32 as ::rfaas::__private::Payload>::SHAPE,
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
    pub struct __rfaas_Args {
        pub options: ::rfaas::__private::SliceDesc,
        pub prices: ::rfaas::__private::SliceDesc,
    }
    ///A typed invocation of `price`, built by [`call`].
    pub struct Call<'__rfaas_a> {
        pub options: &'__rfaas_a [OptionData],
        pub prices: &'__rfaas_a mut [f32],
    }
    /// Builds a typed invocation with the function's own parameters.
    pub fn call<'__rfaas_a>(
        options: &'__rfaas_a [OptionData],
        prices: &'__rfaas_a mut [f32],
    ) -> Call<'__rfaas_a> {
        Call { options, prices }
    }
    /// Invokes the function on `lease`: the returned invocation is a future (`.await`)
    /// with a blocking `wait()`.
    pub fn invoke<'__rfaas_a>(
        __rfaas_lease: &'__rfaas_a ::rfaas::__private::Lease,
        options: &'__rfaas_a [OptionData],
        prices: &'__rfaas_a mut [f32],
    ) -> ::rfaas::__private::Invocation<'__rfaas_a, Call<'__rfaas_a>> {
        __rfaas_lease.invoke(Call { options, prices })
    }
    impl Call<'_> {
        fn __rfaas_outputs(
            &self,
            __rfaas_placement: &::rfaas::__private::Placement,
        ) -> ::rfaas::__private::OutputLayout {
            ::rfaas::__private::OutputLayout::placed(
                ::rfaas::__private::size_of::<u32>(),
                __rfaas_placement,
                &[
                    (
                        self.prices.as_ptr() as usize,
                        ::core::mem::size_of_val(&*self.prices),
                    ),
                ],
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
            __rfaas_args.options = __rfaas_enc
                .input::<OptionData>("options", self.options)?;
            __rfaas_args.prices = __rfaas_out
                .slice::<
                    f32,
                >("prices", self.prices.as_ptr() as usize, self.prices.len())?;
            ::rfaas::__private::Ok(__rfaas_enc.finish(&__rfaas_args, &__rfaas_out))
        }
    }
    impl ::rfaas::__private::RemoteCall for Call<'_> {
        type Output = u32;
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
            __rfaas_dec.output_into::<f32>(&mut __rfaas_out, "prices", self.prices)?;
            __rfaas_dec.value::<u32>()
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
                        ::rfaas::__private::size_of::<u32>(),
                    )?;
                    let __rfaas_p0: &[OptionData] = __rfaas_in
                        .slice::<OptionData>(__rfaas_args.options)?;
                    let __rfaas_p1: &mut [f32] = __rfaas_cur
                        .slice::<f32>(__rfaas_args.prices)?;
                    let __rfaas_end = __rfaas_cur.end();
                    let __rfaas_ret = super::price(__rfaas_p0, __rfaas_p1);
                    ::rfaas::__private::finish_result::<
                        u32,
                        PriceError,
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
