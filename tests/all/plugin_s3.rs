//! The built-in `S3` plugin against s3rver: one object served read-only byte for byte; a
//! disk striped over objects whose bytes land in the right objects (whole-object PUTs,
//! read-modify-writes, concurrent ones included), trims that delete objects and zeroes that
//! read back as zeroes; credentials from parameters or a credentials file; what s3rver
//! refuses (an unknown access key; it does not check V4 signatures, see `sigv4`'s unit tests
//! for the signer against AWS's published examples). Objects are uploaded and inspected with
//! the test's own signed client (support/s3_client.py). Debian's nbdkit has no S3 plugin
//! (it needs boto3), so there is no differential here.

use crate::support::*;
use std::fs;

const BUCKET: &str = "disks";

/// s3rver with the bucket made.
fn service(dir: &TempDir) -> S3rver {
    let s3 = S3rver::start(dir);
    s3.make_bucket(BUCKET);
    s3
}

/// `S3 endpoint-url=... bucket=disks access-key=... secret-key=...` and `extra`.
fn args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["S3", endpoint, "bucket=disks", "access-key=S3RVER", "secret-key=S3RVER"];
    args.extend_from_slice(extra);
    args
}

fn endpoint_arg(s3: &S3rver) -> String {
    format!("endpoint-url={}", s3.endpoint())
}

#[test]
fn one_object_byte_for_byte_and_read_only() {
    let dir = TempDir::new("s3obj");
    let s3 = service(&dir);
    let (image, data) = disk(&dir, "disk.img", 31, (5 << 20) + 1234);
    s3.put(BUCKET, "images/disk.img", image.as_ref());
    let endpoint = endpoint_arg(&s3);
    let args = args(&endpoint, &["key=images/disk.img"]);
    let out = dir.str("out.img");
    let script = format!(
        "nbdcopy \"$uri\" {} && nbdinfo --json \"$uri\" | grep -E 'is_read_only|\"export-size\"'",
        shell_quote(&out)
    );
    let info = assert_success(&run_captive(&args, &script));
    assert!(fs::read(&out).unwrap() == data);
    assert!(info.contains("\"is_read_only\": true"), "{info}");
    assert!(info.contains(&format!("{}", data.len())), "{info}");
    // Sequential 64 KiB reads through the readahead filter, which the host serves from
    // its background fetches.
    let out = dir.str("out2.img");
    let mut with_readahead = vec!["--filter=readahead"];
    with_readahead.extend_from_slice(&args);
    let script = format!(
        "nbdcopy --request-size=65536 --connections=1 --requests=1 \"$uri\" {}",
        shell_quote(&out)
    );
    assert_success(&run_captive(&with_readahead, &script));
    assert!(fs::read(&out).unwrap() == data);
    // qemu-img, which rounds the size up to whole sectors of zeroes.
    let out = dir.str("out3.img");
    let script = format!("qemu-img convert -O raw \"$nbd\" {}", shell_quote(&out));
    assert_success(&run_captive(&args, &script));
    let converted = fs::read(&out).unwrap();
    assert!(converted[..data.len()] == data[..] && converted[data.len()..].iter().all(|&b| b == 0));
}

#[test]
fn credentials_from_a_credentials_file() {
    let dir = TempDir::new("s3cred");
    let s3 = service(&dir);
    let (image, _) = disk(&dir, "disk.img", 32, 65536);
    s3.put(BUCKET, "disk.img", image.as_ref());
    let credentials = dir.join("credentials");
    fs::write(
        &credentials,
        "[default]\naws_access_key_id = NOBODY\naws_secret_access_key = x\n\n\
         [tests]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n",
    )
    .unwrap();
    let endpoint = endpoint_arg(&s3);
    let file = format!("credentials-file={}", credentials.display());
    let run = |profile: &[&str], script: &str| {
        let mut all = vec!["S3", &endpoint, "bucket=disks", "key=disk.img", &file];
        all.extend_from_slice(profile);
        run_captive(&all, script)
    };
    let size = assert_success(&run(&["profile=tests"], "nbdinfo --size \"$uri\""));
    assert_eq!(size.trim(), "65536");
    // The default profile's key is unknown to s3rver: refused at startup.
    let o = run(&[], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("403"), "{}", describe(&o));
    let o = run(&["profile=missing"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("no profile [missing]"), "{}", describe(&o));
}

#[test]
fn an_unknown_access_key_is_refused() {
    let dir = TempDir::new("s3key");
    let s3 = service(&dir);
    let (image, _) = disk(&dir, "disk.img", 33, 4096);
    s3.put(BUCKET, "disk.img", image.as_ref());
    let endpoint = endpoint_arg(&s3);
    for extra in [&["key=disk.img"][..], &["key=striped", "size=1M", "object-size=64k"]] {
        let mut args = vec!["S3", &endpoint, "bucket=disks", "access-key=WRONG", "secret-key=S3RVER"];
        args.extend_from_slice(extra);
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
        assert!(stderr(&o).contains("403"), "{}", describe(&o));
    }
    // A missing object is refused at startup too.
    let o = run_captive(&args(&endpoint, &["key=nope.img"]), "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("404"), "{}", describe(&o));
}

#[test]
fn a_striped_disk_puts_each_block_in_its_object() {
    let dir = TempDir::new("s3stripe");
    let s3 = service(&dir);
    let endpoint = endpoint_arg(&s3);
    let args = args(&endpoint, &["key=vm/disk", "size=1M", "object-size=64k"]);
    let (src, data) = disk(&dir, "src.img", 34, 200 << 10);
    // 200 KiB from the start (3 whole objects and part of a 4th), then 5000 bytes across the
    // boundary of objects 9 and 10.
    let script = format!(
        "nbdcopy {} \"$uri\" && qemu-io -f raw -c 'write -P 0x5a 651000 5000' \"$nbd\" >/dev/null",
        shell_quote(&src)
    );
    assert_success(&run_captive(&args, &script));
    let mut model = vec![0u8; 1 << 20];
    model[..data.len()].copy_from_slice(&data);
    model[651000..656000].fill(0x5a);
    let names: Vec<String> = s3.list(BUCKET, "vm/disk/");
    assert_eq!(
        names,
        [0, 1, 2, 3, 9, 10].map(|b| format!("vm/disk/{b:016x}")),
        "one object per block written"
    );
    for name in &names {
        let block = u64::from_str_radix(&name["vm/disk/".len()..], 16).unwrap() as usize;
        let object = s3.get(&dir, BUCKET, name).unwrap();
        assert!(
            object == model[block << 16..(block + 1) << 16],
            "{name} holds its block"
        );
    }
    let out = dir.str("back.img");
    assert_success(&run_captive(&args, &format!("nbdcopy \"$uri\" {}", shell_quote(&out))));
    assert!(
        fs::read(&out).unwrap() == model,
        "reads give the written bytes and zeroes"
    );
}

#[test]
fn trim_deletes_whole_objects_and_zero_reads_back_as_zeroes() {
    let dir = TempDir::new("s3trim");
    let s3 = service(&dir);
    let endpoint = endpoint_arg(&s3);
    let args = args(&endpoint, &["key=t", "size=1M", "object-size=64k"]);
    let (src, data) = disk(&dir, "src.img", 35, 1 << 20);
    // Trim [128K + 100, 384K): objects 3, 4, 5 go. Zero [512K + 10, 640K + 20): object 9
    // goes, 8 and 10 are rewritten with their zeroed parts.
    let py = "h.trim(393216 - 131172, 131172)\n\
              h.zero(655380 - 524298, 524298)\n\
              print(h.pread(655380 - 524298, 524298) == bytes(655380 - 524298))\n";
    let script = format!(
        "nbdcopy {} \"$uri\" && {}",
        shell_quote(&src),
        nbdsh(&dir, "trimzero", py)
    );
    assert_eq!(assert_success(&run_captive(&args, &script)).trim(), "True");
    let expected: Vec<String> = (0..16)
        .filter(|b| ![3, 4, 5, 9].contains(b))
        .map(|b| format!("t/{b:016x}"))
        .collect();
    assert_eq!(s3.list(BUCKET, "t/"), expected);
    let mut model = data.clone();
    model[524298..655380].fill(0);
    for block in [2usize, 8, 10] {
        let object = s3.get(&dir, BUCKET, &format!("t/{block:016x}")).unwrap();
        assert!(object == model[block << 16..(block + 1) << 16], "object {block}");
    }
}

#[test]
fn concurrent_small_writes_to_one_object_keep_every_byte() {
    // 4 KiB writes, 16 in flight over several instances: each is a read-modify-write of a
    // 64 KiB object, and writes to one object must take turns.
    let dir = TempDir::new("s3rmw");
    let s3 = service(&dir);
    let endpoint = endpoint_arg(&s3);
    let args = args(&endpoint, &["key=c", "size=256k", "object-size=64k"]);
    let (src, data) = disk(&dir, "src.img", 36, 256 << 10);
    let out = dir.str("back.img");
    let script = format!(
        "nbdcopy --request-size=4096 --requests=16 --connections=1 {} \"$uri\" && nbdcopy \"$uri\" {}",
        shell_quote(&src),
        shell_quote(&out)
    );
    assert_success(&run_captive(&args, &script));
    assert!(fs::read(&out).unwrap() == data);
}

#[test]
fn parameters_are_checked_as_nbdkit_does() {
    for (extra, why) in [
        (&["bucket=b", "key=k"][..], "endpoint-url"),
        (&["endpoint-url=http://127.0.0.1:1", "key=k"], "bucket"),
        (&["endpoint-url=http://127.0.0.1:1", "bucket=b"], "key"),
        (
            &["endpoint-url=http://127.0.0.1:1", "bucket=b", "key=k", "size=1M"],
            "together",
        ),
        (
            &[
                "endpoint-url=http://127.0.0.1:1",
                "bucket=b",
                "key=k",
                "size=100k",
                "object-size=64k",
            ],
            "multiple",
        ),
        (
            &["endpoint-url=http://127.0.0.1:1", "bucket=b", "key=k", "access-key=a"],
            "together",
        ),
    ] {
        let mut args = vec!["S3"];
        args.extend_from_slice(extra);
        let o = run_captive(&args, "echo RAN");
        assert_exit1(&o);
        assert!(stderr(&o).contains(why), "{extra:?}: expected {why}\n{}", describe(&o));
    }
}
