//! The built-in `noparallel` filter: `serialize=` lowers the stack's thread model (and
//! connections drops multi-conn), as nbdkit's noparallel filter.

use crate::support::*;

#[test]
fn thread_model_and_flags_as_nbdkit() {
    let dir = TempDir::new("nopar");
    let (img, _) = disk(&dir, "d.img", 95, 1 << 20);
    for mode in [
        None,
        Some("serialize=requests"),
        Some("serialize=all-requests"),
        Some("serialize=connections"),
    ] {
        let mut args = vec!["--filter=noparallel", "file", &img];
        args.extend(mode);
        same_as_nbdkit(&args, INFO_AND_MAP);
        let mut dump = args.clone();
        dump.push("--dump-plugin");
        let thread_model = |out: &str| out.lines().find(|l| l.starts_with("thread_model=")).map(String::from);
        let ours = thread_model(&assert_success(&nbdbox(&dump)));
        let theirs = thread_model(&stdout(&run_tool("nbdkit", &dump, None)));
        assert_eq!(ours, theirs, "{mode:?}");
        assert!(ours.is_some());
    }
}

/// Two reads sent at once on one connection, each slowed by the delay below: serialized
/// they take twice as long.
#[test]
fn requests_take_turns() {
    let dir = TempDir::new("noparslow");
    let py = r#"
import time
t = time.monotonic()
c1 = h.aio_pread(nbd.Buffer(512), 0)
c2 = h.aio_pread(nbd.Buffer(512), 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
print("elapsed", time.monotonic() - t)
"#;
    let sleepy = guest_arg("sleepy");
    let elapsed = |extra: &[&str]| -> f64 {
        let mut args = extra.to_vec();
        args.extend([sleepy.as_str(), "delay-ms=500"]);
        let out = assert_success(&run_captive(&args, &nbdsh(&dir, "p", py)));
        value(&out, "elapsed").parse().unwrap()
    };
    let parallel = elapsed(&[]);
    let serial = elapsed(&["--filter=noparallel"]);
    assert!(serial >= 0.95, "serialized reads overlapped ({serial:.2} s)");
    assert!(
        parallel < serial - 0.3,
        "parallel {parallel:.2} s vs serialized {serial:.2} s"
    );
}
