//! The built-in `error` filter against nbdkit's: the same errors for the same settings (all
//! calls, one call, the error chosen), errors only while the trigger file exists, a rate
//! between never and always, and the same refusals of bad values.

use crate::differential::*;
use crate::support::*;

/// Every call the filter covers, then flush, which it does not.
const CALLS: &str = r#"
outcome("pread", lambda: h.pread(512, 0))
outcome("pwrite", lambda: h.pwrite(b"x" * 512, 0))
outcome("trim", lambda: h.trim(512, 0))
outcome("zero", lambda: h.zero(512, 0))
outcome("extents", lambda: h.block_status(512, 0, lambda *a: 0))
outcome("cache", lambda: h.cache(512, 0))
outcome("flush", lambda: h.flush())
"#;

#[test]
fn errors_match_nbdkit() {
    let dir = TempDir::new("errors");
    let script = nbdsh_loose(&dir, "calls", CALLS);
    for settings in [
        &["error-rate=100%"][..],
        &["error=ENOSPC", "error-rate=1"],
        &[
            "error-pwrite=EPERM",
            "error-pwrite-rate=100%",
            "error-zero=ESHUTDOWN",
            "error-zero-rate=1",
        ],
        &[
            "error=ENOMEM",
            "error-rate=0",
            "error-extents-rate=100%",
            "error-cache-rate=100%",
        ],
        &["error-pread-rate=100%", "error-pread=EINVAL", "error-trim-rate=1"],
    ] {
        let mut args = vec!["--filter=error", "memory", "1M"];
        args.extend_from_slice(settings);
        let out = same_as_nbdkit(&args, &script);
        assert!(out.contains("flush ok"), "{settings:?}\n{out}");
    }
    let out = same_as_nbdkit(
        &["--filter=error", "memory", "1M", "error=ENOSPC", "error-rate=1"],
        &script,
    );
    assert_eq!(out.matches("ENOSPC").count(), 6, "{out}");
}

#[test]
fn errors_only_while_the_trigger_file_exists() {
    let dir = TempDir::new("errfile");
    let trigger = dir.str("trigger");
    let py = format!(
        r#"
outcome("before", lambda: h.pread(512, 0))
open({trigger:?}, "w").close()
outcome("present", lambda: h.pread(512, 0))
outcome("present-write", lambda: h.pwrite(b"x" * 512, 0))
os.remove({trigger:?})
outcome("after", lambda: h.pread(512, 0))
"#
    );
    let script = nbdsh_loose(&dir, "trigger", &py);
    for file_key in ["error-file", "error-pread-file"] {
        let file = format!("{file_key}={trigger}");
        let out = same_as_nbdkit(&["--filter=error", "null", "1M", "error-rate=100%", &file], &script);
        assert!(
            out.contains("before ok") && out.contains("present EIO") && out.contains("after ok"),
            "{out}"
        );
        // error-rate= applies to writes too; only error-file= makes them wait for the file.
        assert!(out.contains("present-write EIO"), "{file_key}\n{out}");
    }
}

#[test]
fn a_rate_between_never_and_always() {
    let dir = TempDir::new("errrate");
    let py = r#"
failed = 0
for i in range(400):
    try:
        h.pread(512, 0)
    except nbd.Error:
        failed += 1
print("failed", failed)
"#;
    let out = assert_success(&run_captive(
        &["--filter=error", "null", "1M", "error-rate=25%"],
        &nbdsh_loose(&dir, "rate", py),
    ));
    let failed: u32 = value(&out, "failed").parse().unwrap();
    assert!((50..=150).contains(&failed), "{failed} of 400 reads failed at 25%");
}

#[test]
fn bad_settings_are_refused_as_by_nbdkit() {
    for bad in [
        "error=EFOO",
        "error-rate=2",
        "error-rate=101%",
        "error-rate=x",
        "error-pread-rate=-1%",
    ] {
        both_refuse(&["--filter=error", "null", "1M", bad]);
    }
}
