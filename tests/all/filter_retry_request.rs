//! The built-in `retry-request` filter: a failed request is retried on the same connection
//! after `retry-request-delay` seconds, up to `retry-request-retries` times; a failed open
//! too unless `retry-request-open=false`. The test-only `faulty` filter below makes the
//! first requests (or opens) fail.

use crate::support::*;

const READ: &str = r#"
import time
t = time.monotonic()
try:
    d = h.pread(4096, 0)
    print("result ok", d[:4].hex())
except nbd.Error as e:
    print("result", e.errno)
print("elapsed", time.monotonic() - t)
"#;

fn run(dir: &TempDir, img: &str, params: &[&str]) -> String {
    let faulty = filter_arg("faulty");
    let mut args = vec!["-v", "--filter=retry-request", &faulty, "file", img];
    args.extend(params);
    let o = run_captive(&args, &format!("{} || echo 'result refused'", nbdsh(dir, "r", READ)));
    assert_success(&o)
}

#[test]
fn retries_a_failed_request_without_reopening() {
    let dir = TempDir::new("rr");
    let (img, data) = disk(&dir, "d.img", 90, 1 << 20);
    let first = format!(
        "result ok {}",
        data[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let out = run(&dir, &img, &["fail-first=2", "retry-request-delay=1"]);
    assert_eq!(format!("result {}", value(&out, "result")), first, "{out}");
    let t: f64 = value(&out, "elapsed").parse().unwrap();
    assert!((2.0..5.0).contains(&t), "two retries of 1 s each, took {t:.2} s");
    let out = run(
        &dir,
        &img,
        &["fail-first=2", "retry-request-delay=1", "retry-request-retries=1"],
    );
    assert_eq!(
        value(&out, "result"),
        "EIO",
        "one retry is not enough for two failures\n{out}"
    );
}

#[test]
fn a_failed_open_is_retried_unless_told_not_to() {
    let dir = TempDir::new("rropen");
    let (img, _) = disk(&dir, "d.img", 91, 1 << 20);
    let out = run(&dir, &img, &["fail-opens=1", "retry-request-delay=1"]);
    assert!(value(&out, "result").starts_with("ok"), "the open is retried\n{out}");
    let out = run(&dir, &img, &["fail-opens=1", "retry-request-open=false"]);
    assert_eq!(value(&out, "result"), "refused", "the open fails at once\n{out}");
}

#[test]
fn data_and_map_as_nbdkit() {
    let dir = TempDir::new("rrdiff");
    let (img, _) = sparse_image(&dir, "s.img", 2 << 20, &[(0, 4096), (1 << 20, 65536)]);
    same_as_nbdkit(
        &["--filter=retry-request", "file", &img, "retry-request-retries=3"],
        &format!("{INFO_AND_MAP} && nbdcopy \"$uri\" - | md5sum"),
    );
}
