//! The built-in `memory` plugin: a sparse RAM disk with every operation, shared by all
//! connections, as large as 2^63-1 bytes (and the largest size qemu takes); a write past
//! the instance's `--memory-limit` is ENOSPC, never a trap, and loses nothing written before.

use crate::support::nbd::*;
use crate::support::*;
use std::os::unix::process::ExitStatusExt;

const MIB: u64 = 1 << 20;

#[test]
fn nbdsh_pwrite_pread_zero_trim_flush() {
    let dir = TempDir::new("sh");
    let py = r#"
size = h.get_size()
assert size == 1048576, size
assert h.can_trim() and h.can_zero() and h.can_flush() and h.can_fua() and h.can_multi_conn()
assert not h.is_read_only()
buf = bytes(range(256)) * 64
h.pwrite(buf, 4096)
assert h.pread(16384, 4096) == buf
h.pwrite(b"\x01" * 512, size - 512, nbd.CMD_FLAG_FUA)
assert h.pread(512, size - 512) == b"\x01" * 512
h.zero(4096, 8192)
assert h.pread(16384, 4096) == buf[:4096] + bytes(4096) + buf[8192:]
h.zero(4096, 12288, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(16384, 4096) == buf[:4096] + bytes(8192) + buf[12288:]
h.pwrite(buf, 65536)
h.trim(16384, 65536)
assert h.pread(16384, 65536) == bytes(16384)
h.flush()
h.cache(4096, 65536)
print("NBDSH-OK")
"#;
    let script = nbdsh(&dir, "ops", py);
    let o = run_captive(&["memory", "1M"], &script);
    assert!(assert_success(&o).contains("NBDSH-OK"), "{}", describe(&o));
}

#[test]
fn memory_shared_across_connections() {
    let dir = TempDir::new("shared");
    let w = nbdsh(&dir, "w", "h.pwrite(b\"shared!!\" * 512, 1000)\n");
    let r = nbdsh(
        &dir,
        "r",
        "assert h.pread(4096, 1000) == b\"shared!!\" * 512\nprint(\"SAW-IT\")\n",
    );
    let o = run_captive(&["memory", "1M"], &format!("{w} && {r}"));
    assert!(assert_success(&o).contains("SAW-IT"), "{}", describe(&o));
}

#[test]
fn memory_largest_size() {
    let dir = TempDir::new("largest");
    let py = r#"
size = h.get_size()
assert size == 2**63 - 1, size
for off, data in [(0, b"A" * 512), (1000000001, b"B" * 512), (2**63 - 512, b"C" * 511)]:
    h.pwrite(data, off)
for off, data in [(0, b"A" * 512), (1000000001, b"B" * 512), (2**63 - 512, b"C" * 511)]:
    assert h.pread(len(data), off) == data, off
assert h.pread(4096, 2**62) == bytes(4096)
assert h.pread(512, 1000000001 + 512) == bytes(512)
print("LARGEST-OK")
"#;
    let script = nbdsh(&dir, "largest", py);
    let o = run_captive(&["memory", "size=9223372036854775807"], &script);
    assert!(assert_success(&o).contains("LARGEST-OK"), "{}", describe(&o));
}

#[test]
fn memory_largest_for_qemu() {
    tool("qemu-io");
    let o = run_captive(
        &["memory", "9223372035781033984"],
        "qemu-io -f raw -c 'write -P 1 0 512' -c 'write -P 2 1000000001 512' \
         -c 'write -P 3 9223372035781032960 512' -c 'read -P 1 0 512' -c 'read -P 2 1000000001 512' \
         -c 'read -P 0 2000000000 512' -c 'read -P 3 9223372035781032960 512' \"$nbd\"",
    );
    let out = assert_success(&o);
    assert!(!out.contains("failed"), "{}", describe(&o));
}

#[test]
fn memory_limit_gives_enospc() {
    let mut srv = Server::start(&["--memory-limit=64M", "memory", "256M"]);
    let mut c = RawClient::open(&srv.sock, true, true);
    let mut failed_at = None;
    for i in 0..160u64 {
        let e = c.write(i * MIB, &pattern(1000 + i, MIB as usize));
        if e != 0 {
            assert_eq!(e, ENOSPC, "out of guest memory must be ENOSPC (after {i} MiB)");
            failed_at = Some(i);
            break;
        }
    }
    let n = failed_at.expect("writing 160 MiB of distinct data under --memory-limit=64M must fail");
    eprintln!("memory limit: first ENOSPC after {n} MiB");
    assert!(n >= 8, "only {n} MiB fitted under a 64M limit");
    assert!(n <= 64, "{n} MiB of distinct data fitted under a 64M limit");
    // Still ENOSPC, not EIO, not a dead server.
    let e = c.write((n + 1) * MIB, &pattern(5000, MIB as usize));
    assert!(e == ENOSPC || e == 0, "second write after exhaustion: {e}");
    assert!(srv.alive(), "server died\n{}", srv.stderr());
    // Everything written before the failure is intact.
    for i in 0..n {
        let d = c
            .read(i * MIB, MIB as u32)
            .unwrap_or_else(|e| panic!("read of MiB {i} failed: {e}"));
        assert!(d == pattern(1000 + i, MIB as usize), "MiB {i} corrupted");
    }
    let mut d = RawClient::open(&srv.sock, false, false);
    assert!(d.read(0, 4096).unwrap() == pattern(1000, MIB as usize)[..4096]);
    // Freeing memory is possible.
    assert_eq!(d.cmd(CMD_TRIM, 0, 0, (n * MIB) as u32), 0);
    assert_eq!(d.read(0, 4096).unwrap(), vec![0u8; 4096]);
    drop(c);
    drop(d);
    let st = srv.stop();
    assert_eq!(st.signal(), None);
}

#[test]
fn malloc_allocator_is_data_throughout_as_nbdkit() {
    tool("nbdinfo");
    tool("qemu-io");
    // nbdkit's malloc allocator reports the whole disk as data, before and after writes.
    let script = "nbdinfo --map \"$uri\" && \
                  qemu-io -f raw -c 'write -P 0x5a 1000 3000' -c 'write -z 0 1500' \"$uri\" >/dev/null && \
                  nbdinfo --map \"$uri\" && nbdcopy \"$uri\" - | md5sum";
    let out = same_as_nbdkit(&["memory", "1M", "allocator=malloc"], script);
    assert!(out.starts_with("         0     1048576    0  data\n"), "{out}");
    // The same writes on the default (sparse) allocator read back the same bytes.
    let sparse = same_as_nbdkit(&["memory", "1M", "allocator=sparse"], script);
    assert_eq!(sparse.lines().last(), out.lines().last());
    assert_success(&run_captive(&["memory", "1M", "allocator=malloc,mlock=false"], "true"));
}

#[test]
fn allocators_nbdbox_cannot_offer_are_refused_by_name() {
    for (allocator, why) in [
        ("zstd", "zstd"),
        ("malloc,mlock=true", "mlock"),
        ("nosuch", "nosuch"),
        ("malloc,nosuch=1", "nosuch"),
    ] {
        let o = run_captive(&["memory", "1M", &format!("allocator={allocator}")], "echo RAN");
        assert_exit1(&o);
        assert!(stderr(&o).contains(why), "{allocator}\n{}", describe(&o));
    }
    // malloc allocates the whole disk at startup: more than the memory limit cannot start.
    let o = run_captive(&["--memory-limit=64M", "memory", "1G", "allocator=malloc"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("memory limit"), "{}", describe(&o));
}
