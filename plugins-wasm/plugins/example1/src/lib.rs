//! example1: nbdkit's first example plugin, a read-only 100 MiB disk whose first sector is an
//! MBR with one (empty) Linux partition. Everything after the boot sector reads as zeros and
//! is never stored.

use nbdbox_sdk::prelude::*;

/// The disk size: 100 MiB (204800 sectors).
const DISK_SIZE: u64 = 104_857_600;

/// The master boot record at offset 0.
const MBR: [u8; 512] = mbr();

const fn put(mut buf: [u8; 512], at: usize, bytes: &[u8]) -> [u8; 512] {
    let mut i = 0;
    while i < bytes.len() {
        buf[at + i] = bytes[i];
        i += 1;
    }
    buf
}

const fn mbr() -> [u8; 512] {
    let mut b = [0u8; 512];
    // 0x000..0x03E: boot code. A stub that halts forever: cli; hlt; jmp back to hlt.
    b = put(b, 0x000, &[0xfa, 0xf4, 0xeb, 0xfd]);
    // Disk signature 0x00025BE1 (little-endian), then 0x0000.
    b = put(b, 0x1b8, &0x0002_5be1u32.to_le_bytes());
    // Partition 1: not active, CHS start 02 03 00, type 0x83 (Linux), CHS end bc 31 0c,
    // start LBA 128, 204545 sectors.
    b = put(b, 0x1be, &[0x00, 0x02, 0x03, 0x00, 0x83, 0xbc, 0x31, 0x0c]);
    b = put(b, 0x1c6, &128u32.to_le_bytes());
    b = put(b, 0x1ca, &204_545u32.to_le_bytes());
    // Partitions 2-4 empty; boot signature.
    put(b, 0x1fe, &[0x55, 0xaa])
}

/// No configuration (any key is refused, as nbdkit refuses it for a plugin without
/// `.config`), no writes, no flush, trim, zero, extents or cache: only the SDK's defaults.
#[derive(Default)]
struct Example1;

impl Plugin for Example1 {
    const NAME: &'static str = "example1";
    const DESCRIPTION: &'static str = "A read-only 100 MiB disk with one empty Linux partition";
    const THREAD_MODEL: ThreadModel = ThreadModel::SerializeAllRequests;
    type Connection = Example1Connection;

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<Example1Connection> {
        Ok(Example1Connection)
    }
}

struct Example1Connection;

#[nbdbox_sdk::connection]
impl Connection for Example1Connection {
    fn get_size(&self) -> Result<u64> {
        Ok(DISK_SIZE)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let mbr_len = MBR.len() as u64;
        let mut at = 0u32;
        if offset < mbr_len {
            // Both bounds are below 512, so the conversions are exact.
            let end = (offset + u64::from(count)).min(mbr_len);
            let bytes = &MBR[offset as usize..end as usize];
            dst.write(0, bytes);
            at = bytes.len() as u32;
        }
        if at < count {
            dst.zero(at, count - at);
        }
        Ok(())
    }
}

nbdbox_sdk::plugin!(Example1);

#[cfg(test)]
mod tests {
    use super::MBR;

    #[test]
    fn mbr_layout() {
        assert_eq!(&MBR[0x1b8..0x1be], &[0xe1, 0x5b, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(
            &MBR[0x1be..0x1ce],
            &[0x00, 0x02, 0x03, 0x00, 0x83, 0xbc, 0x31, 0x0c, 0x80, 0x00, 0x00, 0x00, 0x01, 0x1f, 0x03, 0x00]
        );
        assert!(MBR[0x1ce..0x1fe].iter().all(|&b| b == 0));
        assert_eq!(&MBR[0x1fe..], &[0x55, 0xaa]);
        assert!(MBR[0x3e..0x1b8].iter().all(|&b| b == 0));
    }
}
