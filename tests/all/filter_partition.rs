//! The built-in `partition` filter: serving partition N of an MBR (primary and logical) or
//! GPT disk, byte for byte as nbdkit's partition filter serves it, and GPT with 4096-byte
//! sectors (which nbdkit 1.32 does not read), against the bytes the table points at.

use crate::support::*;
use std::fs;

const MIB: u64 = 1 << 20;

fn le32(v: u64) -> [u8; 4] {
    (v as u32).to_le_bytes()
}

/// One MBR-style entry (type, start sector, sectors) at `at`.
fn mbr_entry(disk: &mut [u8], at: usize, kind: u8, start: u64, sectors: u64) {
    disk[at + 4] = kind;
    disk[at + 8..at + 12].copy_from_slice(&le32(start));
    disk[at + 12..at + 16].copy_from_slice(&le32(sectors));
}

fn boot_signature(disk: &mut [u8], sector: usize) {
    disk[sector + 510] = 0x55;
    disk[sector + 511] = 0xaa;
}

/// An 8 MiB disk of pattern data with an MBR: 1 and 2 primary, 3 extended holding logical
/// 5 and 6. Returns the image and each partition's (number, offset, length).
fn mbr_disk() -> (Vec<u8>, Vec<(u32, u64, u64)>) {
    let mut disk = pattern(40, 8 << 20);
    disk[..512].fill(0);
    mbr_entry(&mut disk, 0x1be, 0x83, 2048, 2048);
    mbr_entry(&mut disk, 0x1ce, 0x83, 4096, 2048);
    mbr_entry(&mut disk, 0x1de, 0x05, 6144, 8192);
    boot_signature(&mut disk, 0);
    // EBRs at sector 6144 and 10240 (relative links from the extended partition's start).
    for (ebr, start, sectors, next) in [(6144u64, 64u64, 2000u64, 4096u64), (10240, 64, 4000, 0)] {
        let at = (ebr * 512) as usize;
        disk[at..at + 512].fill(0);
        mbr_entry(&mut disk, at + 0x1be, 0x83, start, sectors);
        if next > 0 {
            mbr_entry(&mut disk, at + 0x1ce, 0x05, next, 4096);
        }
        boot_signature(&mut disk, at);
    }
    let parts = vec![
        (1, 2048 * 512, 2048 * 512),
        (2, 4096 * 512, 2048 * 512),
        (5, (6144 + 64) * 512, 2000 * 512),
        (6, (10240 + 64) * 512, 4000 * 512),
    ];
    (disk, parts)
}

/// An 8 MiB disk with a protective MBR and a GPT of `sector`-byte sectors: partitions 1 and
/// 3 used, 2 unused.
fn gpt_disk(sector: u64) -> (Vec<u8>, Vec<(u32, u64, u64)>) {
    let mut disk = pattern(41, 8 << 20);
    let s = sector as usize;
    disk[..3 * s].fill(0);
    let sectors = (8 * MIB) / sector;
    mbr_entry(&mut disk, 0x1be, 0xee, 1, sectors - 1);
    boot_signature(&mut disk, 0);
    let header = s;
    disk[header..header + 8].copy_from_slice(b"EFI PART");
    disk[header + 8..header + 12].copy_from_slice(&[0, 0, 1, 0]);
    disk[header + 12..header + 16].copy_from_slice(&le32(92));
    disk[header + 24..header + 32].copy_from_slice(&1u64.to_le_bytes());
    disk[header + 72..header + 80].copy_from_slice(&2u64.to_le_bytes());
    disk[header + 80..header + 84].copy_from_slice(&le32(4));
    disk[header + 84..header + 88].copy_from_slice(&le32(128));
    let parts = [(1u32, 256u64, 511u64), (3, 1024, 1535)];
    for (n, first, last) in parts {
        let at = 2 * s + (n as usize - 1) * 128;
        disk[at..at + 16].copy_from_slice(&[0xaf; 16]);
        disk[at + 16..at + 32].copy_from_slice(&[n as u8; 16]);
        disk[at + 32..at + 40].copy_from_slice(&first.to_le_bytes());
        disk[at + 40..at + 48].copy_from_slice(&last.to_le_bytes());
    }
    let parts = parts
        .iter()
        .map(|&(n, first, last)| (n, first * sector, (last - first + 1) * sector))
        .collect();
    (disk, parts)
}

fn serve_partition(img: &str, n: u32, nbdkit: bool, out: &str) -> String {
    let arg = format!("partition={n}");
    let args = ["--filter=partition", "file", img, &arg];
    let script = format!("nbdcopy \"$uri\" {} && nbdinfo --size \"$uri\"", shell_quote(out));
    let o = if nbdkit {
        nbdkit_captive(&args, &script)
    } else {
        run_captive(&args, &script)
    };
    assert_success(&o)
}

#[test]
fn mbr_and_gpt_partitions_as_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("part");
    for (name, (disk, parts)) in [("mbr", mbr_disk()), ("gpt", gpt_disk(512))] {
        let img = dir.str(&format!("{name}.img"));
        fs::write(&img, &disk).unwrap();
        for (n, offset, len) in parts {
            let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
            let our_size = serve_partition(&img, n, false, &ours);
            let their_size = serve_partition(&img, n, true, &theirs);
            assert_eq!(our_size, their_size, "{name} partition {n}: size");
            let want = &disk[offset as usize..(offset + len) as usize];
            assert!(fs::read(&ours).unwrap() == want, "{name} partition {n}: bytes");
            assert!(
                fs::read(&theirs).unwrap() == want,
                "{name} partition {n}: nbdkit's bytes"
            );
        }
    }
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let dir = TempDir::new("part4k");
    let (disk, parts) = gpt_disk(4096);
    let img = dir.str("gpt4k.img");
    fs::write(&img, &disk).unwrap();
    for (n, offset, len) in parts {
        let out = dir.str("out");
        let size = serve_partition(&img, n, false, &out);
        assert_eq!(size.trim(), len.to_string());
        assert!(
            fs::read(&out).unwrap() == disk[offset as usize..(offset + len) as usize],
            "partition {n}"
        );
    }
}

#[test]
fn missing_partitions_fail_the_open_naming_why() {
    let dir = TempDir::new("partbad");
    let (disk, _) = gpt_disk(512);
    let img = dir.str("gpt.img");
    fs::write(&img, &disk).unwrap();
    for (n, why) in [("2", "unused"), ("9", "not found")] {
        let o = run_captive(
            &["--filter=partition", "file", &img, &format!("partition={n}")],
            "nbdinfo --size \"$uri\" || echo REFUSED",
        );
        assert!(assert_success(&o).contains("REFUSED"), "{}", describe(&o));
        assert!(stderr(&o).contains(why), "partition {n}: {}", describe(&o));
    }
    let o = run_captive(&["--filter=partition", "file", &img], "true");
    assert_exit1(&o);
}

#[test]
fn writes_land_inside_the_partition() {
    let dir = TempDir::new("partw");
    let (disk, parts) = mbr_disk();
    let img = dir.str("mbr.img");
    fs::write(&img, &disk).unwrap();
    let py = "h.pwrite(b'P' * 1000, 100)\nh.flush()\n";
    assert_success(&run_captive(
        &["--filter=partition", "file", &img, "partition=5"],
        &nbdsh(&dir, "w", py),
    ));
    let (_, offset, _) = parts[2];
    let mut want = disk.clone();
    want[offset as usize + 100..offset as usize + 1100].fill(b'P');
    assert!(fs::read(&img).unwrap() == want, "the write landed outside partition 5");
}
