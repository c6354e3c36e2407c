//! The built-in `example1` plugin (not in Debian's nbdkit, so checked
//! against the facts of nbdkit's example1: size, read-only, the MBR bytes).

use crate::support::*;
use std::fs;
use std::process::Command;

const SIZE: u64 = 104_857_600;

/// Bytes 0x1B8..0x200 of nbdkit's example1 boot sector, built field by field
/// from the description of that MBR: disk signature, partition table, boot
/// signature.
fn expected_mbr_tail() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0002_5BE1u32.to_le_bytes()); // 0x1B8 disk signature
    v.extend_from_slice(&[0, 0]); // 0x1BC
                                  // 0x1BE partition 1: not active, CHS start, type Linux, CHS end, LBA, sectors.
    v.push(0x00);
    v.extend_from_slice(&[0x02, 0x03, 0x00]);
    v.push(0x83);
    v.extend_from_slice(&[0xbc, 0x31, 0x0c]);
    v.extend_from_slice(&128u32.to_le_bytes());
    v.extend_from_slice(&204_545u32.to_le_bytes());
    v.extend_from_slice(&[0u8; 48]); // partitions 2-4 empty
    v.extend_from_slice(&[0x55, 0xaa]); // 0x1FE
    assert_eq!(v.len(), 0x200 - 0x1B8);
    v
}

#[test]
fn size_and_read_only() {
    tool("nbdinfo");
    let o = run_captive(&["example1"], "nbdinfo --json \"$uri\"");
    let out = assert_success(&o);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains(&format!("\"export-size\": {SIZE}")), "{out}");

    // The server refuses a write sent anyway, and the disk is unchanged.
    let srv = Server::start(&["example1"]);
    let mut c = RawClient::open(&srv.sock, false, false);
    assert_eq!(c.size, SIZE);
    assert_ne!(c.eflags & nbd::TF_READ_ONLY, 0, "READ_ONLY flag not set");
    let before = c.read(0, 512).unwrap();
    assert_eq!(c.write(0, &[0xff; 512]), nbd::EPERM, "WRITE to example1");
    assert_eq!(
        c.cmd(nbd::CMD_WRITE_ZEROES, 0, 0, 512),
        nbd::EPERM,
        "WRITE_ZEROES to example1"
    );
    assert_eq!(c.read(0, 512).unwrap(), before);
    c.disconnect();
}

#[test]
fn qemu_io_write_is_refused() {
    tool("qemu-io");
    let o = run_captive(
        &["example1"],
        "qemu-io -f raw -c 'write -P 0x11 0 512' \"$nbd\" 2>&1; echo \"RC=$?\"",
    );
    let out = assert_success(&o);
    let refused =
        !out.contains("RC=0") || out.contains("failed") || out.contains("read-only") || out.contains("not permitted");
    assert!(refused, "qemu-io wrote to example1\n{}", describe(&o));
    assert!(!out.contains("wrote 512/512"), "{}", describe(&o));
}

#[test]
fn first_sector_is_the_mbr_and_the_rest_is_zero() {
    tool("qemu-img");
    let dir = TempDir::new("ex1");
    let py = "import sys\nsys.stdout.buffer.write(h.pread(512, 0))\n";
    let script = format!(
        "{} > {} && qemu-img convert -f raw -O raw \"$nbd\" {}",
        nbdsh(&dir, "mbr", py),
        shell_quote(&dir.str("sector0")),
        shell_quote(&dir.str("out.img"))
    );
    let o = run_captive(&["example1"], &script);
    assert_success(&o);
    let sector = fs::read(dir.join("sector0")).unwrap();
    assert_eq!(sector.len(), 512, "nbdsh read of sector 0");
    assert_eq!(
        &sector[0x1B8..],
        expected_mbr_tail().as_slice(),
        "MBR bytes 0x1B8..0x200"
    );
    let img = fs::read(dir.join("out.img")).unwrap();
    assert_eq!(img.len() as u64, SIZE, "converted image size");
    assert_eq!(&img[..512], sector.as_slice(), "qemu-img and nbdsh disagree");
    if let Some(i) = img[512..].iter().position(|&b| b != 0) {
        panic!("byte {} after the MBR is {:#04x}, not zero", 512 + i, img[512 + i]);
    }
}

#[test]
fn captive_convert_needs_no_other_arguments() {
    tool("qemu-img");
    let dir = TempDir::new("ex1cap");
    let mut c = Command::new(bin());
    c.args(["-U", "-", "example1", "--run", "qemu-img convert $nbd out.img"])
        .current_dir(&dir.path);
    let o = run_with_timeout(c, DEFAULT_TIMEOUT);
    assert_success(&o);
    let img = fs::read(dir.join("out.img")).expect("out.img was not written");
    assert_eq!(img.len() as u64, SIZE);
    assert_eq!(&img[0x1B8..0x200], expected_mbr_tail().as_slice());
}
