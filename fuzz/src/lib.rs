//! What the fuzz targets and the seed generator share: libFuzzer's entry point, and the
//! client's side of an NBD session as bytes.
//!
//! This crate does not use nbdbox: the seed generator links it without libFuzzer, and the
//! codec target checks nbdbox's parsers against this independent encoder.

pub mod client;

/// Defines libFuzzer's entry points around `|data| { ... }`, run once per input. A panic
/// anywhere (in any thread) aborts the process, which is how libFuzzer learns of a crash and
/// saves the input.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident| $body:block) => {
        /// libFuzzer calls this once, before the first input.
        #[no_mangle]
        pub extern "C" fn LLVMFuzzerInitialize(_argc: *mut i32, _argv: *mut *mut *mut u8) -> i32 {
            $crate::abort_on_panic();
            0
        }

        /// libFuzzer calls this for every input.
        ///
        /// # Safety
        /// `data` points to `size` readable bytes (or `size` is 0).
        #[no_mangle]
        pub unsafe extern "C" fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> i32 {
            let input: &[u8] = if size == 0 {
                &[]
            } else {
                // SAFETY: libFuzzer passes `size` readable bytes at `data`, alive for the call.
                unsafe { std::slice::from_raw_parts(data, size) }
            };
            // A closure, so that the body may `return` early.
            let run = |$data: &[u8]| $body;
            run(input);
            0
        }
    };
}

/// Print the panic as usual, then abort, so that libFuzzer records the input as a crash
/// (libfuzzer-sys does the same).
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}
