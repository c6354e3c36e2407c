//! OpenSSL's libraries, loaded the first time TLS or an https URL needs them.
//!
//! Linked the usual way, libssl and libcrypto cost every start about 0.75 ms: the loader
//! binds their symbols and OpenSSL probes the CPU, and each `cpuid` traps to the hypervisor
//! on a VM. Most runs never use either library. So every OpenSSL function the binary calls
//! is defined here as a jump through a table, hidden from other objects: the linker binds
//! the `openssl` crate's calls to these, `--as-needed` then leaves libssl and libcrypto out
//! of the binary's `DT_NEEDED`, and the first call (or [`load`]) fills the table by
//! `dlopen`. The table lives in RELRO memory and is writable only while it is filled, as
//! the GOT of a `BIND_NOW` binary is.
//!
//! A function missing from the list below is not an error: the linker binds it to libssl
//! directly, and the library is loaded at startup again. `tests/all/tls.rs` catches
//! that and names the function to add.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The library the `openssl` crate was built against (build.rs, from openssl-sys).
const SONAME: &CStr = match CStr::from_bytes_with_nul(concat!(env!("NBDBOX_LIBSSL"), "\0").as_bytes()) {
    Ok(name) => name,
    Err(_) => panic!("NBDBOX_LIBSSL holds a NUL"),
};

const PAGE: usize = 4096;

/// One page of function addresses, in the order of [`NAMES`]; 0 until loaded.
#[repr(C, align(4096))]
struct Table([AtomicUsize; PAGE / 8]);

#[link_section = ".data.rel.ro.nbdbox_libssl"]
static TABLE: Table = Table([const { AtomicUsize::new(0) }; PAGE / 8]);

/// Defines each function as a stub that jumps through its table entry, or into
/// `nbdbox_libssl_resolve` with the entry's index in r11 while the entry is 0.
macro_rules! on_demand {
    ($($name:ident)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(usize)]
        enum Index { $($name,)* }

        const NAMES: &[&CStr] = &[$(
            match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("a C name"),
            },
        )*];

        $(std::arch::global_asm!(
            concat!(".pushsection .text.nbdbox_libssl.", stringify!($name), ",\"ax\",@progbits"),
            concat!(".globl ", stringify!($name)),
            concat!(".hidden ", stringify!($name)),
            concat!(".type ", stringify!($name), ",@function"),
            concat!(stringify!($name), ":"),
            "mov r11, qword ptr [rip + {table} + {offset}]",
            "test r11, r11",
            "jz 2f",
            "jmp r11",
            "2:",
            "mov r11d, {index}",
            "jmp nbdbox_libssl_resolve",
            ".popsection",
            table = sym TABLE,
            offset = const Index::$name as usize * 8,
            index = const Index::$name as usize,
        );)*
    };
}

on_demand! {
    ASN1_STRING_get0_data ASN1_STRING_length ASN1_STRING_to_UTF8 ASN1_STRING_type
    BIO_clear_flags BIO_free_all BIO_get_data BIO_meth_free BIO_meth_new BIO_meth_set_create
    BIO_meth_set_ctrl BIO_meth_set_destroy BIO_meth_set_puts BIO_meth_set_read
    BIO_meth_set_write BIO_new BIO_new_mem_buf BIO_set_data BIO_set_flags BIO_set_init
    CRYPTO_free CRYPTO_get_ex_new_index DH_free ERR_get_error_all ERR_lib_error_string
    ERR_reason_error_string EVP_PKEY_free OBJ_nid2sn OBJ_obj2nid OPENSSL_init_ssl
    OpenSSL_version_num PEM_read_bio_DHparams PEM_read_bio_PrivateKey PEM_read_bio_X509
    PEM_read_bio_X509_CRL SSL_CTX_check_private_key SSL_CTX_ctrl SSL_CTX_free
    SSL_CTX_get_cert_store SSL_CTX_get_ex_data SSL_CTX_load_verify_locations SSL_CTX_new
    SSL_CTX_set_cert_store SSL_CTX_set_cipher_list SSL_CTX_set_ciphersuites
    SSL_CTX_set_default_verify_paths SSL_CTX_set_ex_data SSL_CTX_set_keylog_callback
    SSL_CTX_set_options SSL_CTX_set_psk_server_callback SSL_CTX_set_session_id_context
    SSL_CTX_set_verify SSL_CTX_up_ref SSL_CTX_use_PrivateKey SSL_CTX_use_PrivateKey_file
    SSL_CTX_use_certificate SSL_CTX_use_certificate_chain_file SSL_accept SSL_connect
    SSL_ctrl SSL_free SSL_get0_param SSL_get1_peer_certificate SSL_get_SSL_CTX SSL_get_error
    SSL_get_ex_data SSL_get_ex_data_X509_STORE_CTX_idx SSL_get_rbio SSL_get_verify_result
    SSL_new SSL_pending SSL_read_ex SSL_set_bio SSL_set_ex_data SSL_set_verify SSL_write_ex
    TLS_method TLS_server_method X509_CRL_free X509_CRL_get0_by_cert X509_CRL_verify
    X509_NAME_ENTRY_get_data X509_NAME_ENTRY_get_object X509_NAME_entry_count
    X509_NAME_get_entry X509_NAME_get_index_by_NID X509_STORE_CTX_get_current_cert
    X509_STORE_CTX_get_error_depth X509_STORE_CTX_get_ex_data X509_STORE_add_cert
    X509_STORE_new X509_VERIFY_PARAM_set1_host X509_VERIFY_PARAM_set1_ip
    X509_VERIFY_PARAM_set_hostflags X509_free X509_get_issuer_name X509_get_pubkey
    X509_get_subject_name X509_up_ref X509_verify_cert_error_string d2i_X509
}

const _: () = assert!(NAMES.len() <= PAGE / 8);

// The stubs' slow path: the caller's argument registers (and al, a variadic call's count
// of vector registers) are kept across the call to `resolve`, then the stub's call goes on
// to the function. On entry rsp is 8 past 16-byte alignment; seven pushes realign it.
std::arch::global_asm!(
    ".pushsection .text.nbdbox_libssl_resolve,\"ax\",@progbits",
    ".globl nbdbox_libssl_resolve",
    ".hidden nbdbox_libssl_resolve",
    "nbdbox_libssl_resolve:",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push r8",
    "push r9",
    "push rax",
    "sub rsp, 128",
    "movdqu xmmword ptr [rsp], xmm0",
    "movdqu xmmword ptr [rsp + 16], xmm1",
    "movdqu xmmword ptr [rsp + 32], xmm2",
    "movdqu xmmword ptr [rsp + 48], xmm3",
    "movdqu xmmword ptr [rsp + 64], xmm4",
    "movdqu xmmword ptr [rsp + 80], xmm5",
    "movdqu xmmword ptr [rsp + 96], xmm6",
    "movdqu xmmword ptr [rsp + 112], xmm7",
    "mov rdi, r11",
    "call {resolve}",
    "mov r11, rax",
    "movdqu xmm0, xmmword ptr [rsp]",
    "movdqu xmm1, xmmword ptr [rsp + 16]",
    "movdqu xmm2, xmmword ptr [rsp + 32]",
    "movdqu xmm3, xmmword ptr [rsp + 48]",
    "movdqu xmm4, xmmword ptr [rsp + 64]",
    "movdqu xmm5, xmmword ptr [rsp + 80]",
    "movdqu xmm6, xmmword ptr [rsp + 96]",
    "movdqu xmm7, xmmword ptr [rsp + 112]",
    "add rsp, 128",
    "pop rax",
    "pop r9",
    "pop r8",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "jmp r11",
    ".popsection",
    resolve = sym resolve,
);

/// The address of function `index`, loading the library first. A stub cannot return an
/// error to its caller, so failing here ends the process, as a failed bind at startup would.
extern "C" fn resolve(index: usize) -> usize {
    if let Err(e) = load() {
        eprintln!("nbdbox: {e}");
        std::process::abort();
    }
    TABLE.0[index].load(Ordering::Acquire)
}

/// Loads libssl (and through it libcrypto) and binds every function the binary uses;
/// afterwards OpenSSL calls cost one indirect jump. Called before the first use where a
/// failure can still be reported as a configuration error.
pub fn load() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(fill_table).clone()
}

fn fill_table() -> Result<(), String> {
    let soname = SONAME.to_string_lossy();
    // SAFETY: dlopen with a NUL-terminated name; the handle is kept for the process's life.
    let handle = unsafe { libc::dlopen(SONAME.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {soname}: {}", dl_error()));
    }
    let table = TABLE.0.as_ptr().cast_mut().cast::<c_void>();
    set_writable(table, true).map_err(|e| format!("{soname}: making the function table writable: {e}"))?;
    let mut missing = Vec::new();
    for (index, name) in NAMES.iter().enumerate() {
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) } as usize;
        if address == 0 {
            missing.push(name.to_string_lossy());
        }
        // A stub jumps through an entry once it is non-zero, so each is stored whole.
        TABLE.0[index].store(address, Ordering::Release);
    }
    set_writable(table, false).map_err(|e| format!("{soname}: making the function table read-only: {e}"))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{soname} lacks {}", missing.join(", ")))
    }
}

fn set_writable(page: *mut c_void, writable: bool) -> std::io::Result<()> {
    let protection = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: `page` is the page-aligned, page-sized table, which nothing else shares.
    match unsafe { libc::mprotect(page, PAGE, protection) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next dl call.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "unknown error".to_owned();
    }
    // SAFETY: checked non-NULL above.
    unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
}
