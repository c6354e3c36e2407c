//! Finding partition N in an MBR or GPT partition table (nbdkit's
//! filters/partition/partition-mbr.c and partition-gpt.c), with 512-byte or 4096-byte
//! sectors. Plain Rust over a read callback, so that it is unit-tested natively.

/// Where a partition is, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TableError<E> {
    /// Reading the disk failed.
    Read(E),
    /// Why the partition cannot be served, in nbdkit's words.
    Bad(String),
}

fn bad<E>(why: impl Into<String>) -> TableError<E> {
    TableError::Bad(why.into())
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Linux's is_extended_partition.
fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// Entry `i` of the four in an MBR or EBR sector: (type, start sector, sectors).
fn mbr_entry(sector: &[u8], i: usize) -> (u8, u64, u64) {
    let at = 0x1be + i * 16;
    (sector[at + 4], le32(sector, at + 8), le32(sector, at + 12))
}

/// Find partition `number` (from 1) on a disk of `size` bytes. `sector` is the logical
/// sector size the MBR is read with (a GPT header says where it is by itself being at LBA 1
/// of 512 or 4096); `read(offset, len)` reads the disk.
pub fn find<E>(
    number: u32,
    size: u64,
    mbr_sector: u64,
    read: impl Fn(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Found, TableError<E>> {
    if size < 2 * 512 {
        return Err(bad("disk is too small to be a partitioned disk"));
    }
    let head = read(0, (2 * 4096).min(size)).map_err(TableError::Read)?;
    let found = if let Some(sector) = [512u64, 4096]
        .into_iter()
        .find(|&s| size >= 2 * 34 * s && head.len() as u64 >= s + 8 && &head[s as usize..s as usize + 8] == b"EFI PART")
    {
        find_gpt(number, sector, &head[sector as usize..], &read)?
    } else if head[0x1fe] == 0x55 && head[0x1ff] == 0xaa {
        find_mbr(number, size, mbr_sector, &head, &read)?
    } else {
        return Err(bad("disk does not contain MBR or GPT partition table signature"));
    };
    if found.offset.checked_add(found.len).is_none_or(|end| end > size) {
        return Err(bad("partition is outside the disk"));
    }
    Ok(found)
}

fn find_mbr<E>(
    number: u32,
    size: u64,
    sector: u64,
    mbr: &[u8],
    read: &impl Fn(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Found, TableError<E>> {
    if number <= 4 {
        let (kind, start, sectors) = mbr_entry(mbr, number as usize - 1);
        if sectors > 0 && kind != 0 && !is_extended(kind) {
            return Ok(Found {
                offset: start * sector,
                len: sectors * sector,
            });
        }
        return Err(bad(format!("MBR partition {number} not found")));
    }
    let Some((_, ep_start, ep_sectors)) = (0..4)
        .map(|i| mbr_entry(mbr, i))
        .find(|&(kind, _, sectors)| sectors > 0 && is_extended(kind))
    else {
        return Err(bad(
            "MBR logical partition selected, but there is no extended partition in the partition table",
        ));
    };
    let ep_end = (ep_start + ep_sectors) * sector;
    let mut ebr = ep_start * sector;
    // Links must move strictly forward, so the walk ends.
    for i in 5.. {
        if ebr < sector || ebr + sector > size {
            return Err(bad(
                "invalid EBR chain: next EBR boot sector is located outside disk boundary",
            ));
        }
        let table = read(ebr, 512).map_err(TableError::Read)?;
        if i == number {
            let (_, start, sectors) = mbr_entry(&table, 0);
            let (offset, len) = (ebr + start * sector, sectors * sector);
            if offset <= ebr || offset + len > ep_end {
                return Err(bad(format!(
                    "logical partition start or size out of range (offset={offset}, range={len}, \
                     ep:startsect={ep_start}, ep:nrsects={ep_sectors})"
                )));
            }
            return Ok(Found { offset, len });
        }
        let (_, next, next_sectors) = mbr_entry(&table, 1);
        if next == 0 && next_sectors == 0 {
            break;
        }
        let next_ebr = (ep_start + next) * sector;
        if next_ebr <= ebr {
            return Err(bad(format!(
                "invalid EBR chain: next EBR {next_ebr} <= current EBR {ebr}"
            )));
        }
        ebr = next_ebr;
    }
    Err(bad(format!("MBR partition {number} not found")))
}

fn find_gpt<E>(
    number: u32,
    sector: u64,
    header: &[u8],
    read: &impl Fn(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Found, TableError<E>> {
    let entries_lba = le64(header, 72);
    let entries = le32(header, 80);
    let entry_size = le32(header, 84);
    if !(128..=4096).contains(&entry_size) {
        return Err(bad(format!("GPT partition entry size {entry_size} is invalid")));
    }
    if u64::from(number) > entries {
        return Err(bad(format!("GPT partition {number} not found")));
    }
    let at = entries_lba * sector + (u64::from(number) - 1) * entry_size;
    let entry = read(at, entry_size).map_err(TableError::Read)?;
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(bad(format!("GPT partition {number} is unused")));
    }
    let (first, last) = (le64(&entry, 32), le64(&entry, 40));
    if last < first {
        return Err(bad(format!("GPT partition {number} ends before it starts")));
    }
    Ok(Found {
        offset: first * sector,
        len: (last - first + 1) * sector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_mbr_entry(disk: &mut [u8], sector_at: usize, i: usize, kind: u8, start: u32, sectors: u32) {
        let at = sector_at + 0x1be + i * 16;
        disk[at + 4] = kind;
        disk[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        disk[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
        disk[sector_at + 0x1fe] = 0x55;
        disk[sector_at + 0x1ff] = 0xaa;
    }

    fn reader(disk: &[u8]) -> impl Fn(u64, u64) -> Result<Vec<u8>, ()> + '_ {
        |offset, len| Ok(disk[offset as usize..(offset + len) as usize].to_vec())
    }

    #[test]
    fn mbr_primary_and_logical() {
        let mut disk = vec![0u8; 1 << 20];
        put_mbr_entry(&mut disk, 0, 0, 0x83, 1, 10);
        put_mbr_entry(&mut disk, 0, 1, 0x05, 100, 900);
        // EBR at sector 100: logical 5 at +2 for 20 sectors, link to the EBR at ep+50.
        put_mbr_entry(&mut disk, 100 * 512, 0, 0x83, 2, 20);
        put_mbr_entry(&mut disk, 100 * 512, 1, 0x05, 50, 100);
        put_mbr_entry(&mut disk, 150 * 512, 0, 0x83, 1, 30);
        let size = disk.len() as u64;
        let find = |n| find(n, size, 512, reader(&disk));
        assert_eq!(find(1), Ok(Found { offset: 512, len: 5120 }));
        assert_eq!(
            find(5),
            Ok(Found {
                offset: 102 * 512,
                len: 20 * 512
            })
        );
        assert_eq!(
            find(6),
            Ok(Found {
                offset: 151 * 512,
                len: 30 * 512
            })
        );
        assert!(
            matches!(find(2), Err(TableError::Bad(_))),
            "the extended partition itself"
        );
        assert!(matches!(find(3), Err(TableError::Bad(_))));
        assert!(matches!(find(7), Err(TableError::Bad(_))));
    }

    #[test]
    fn gpt_with_either_sector_size() {
        for sector in [512usize, 4096] {
            let mut disk = vec![0u8; 1 << 20];
            disk[sector..sector + 8].copy_from_slice(b"EFI PART");
            disk[sector + 72..sector + 80].copy_from_slice(&2u64.to_le_bytes());
            disk[sector + 80..sector + 84].copy_from_slice(&128u32.to_le_bytes());
            disk[sector + 84..sector + 88].copy_from_slice(&128u32.to_le_bytes());
            let entry = 2 * sector + 128; // partition 2
            disk[entry] = 0xaf;
            disk[entry + 32..entry + 40].copy_from_slice(&40u64.to_le_bytes());
            disk[entry + 40..entry + 48].copy_from_slice(&49u64.to_le_bytes());
            let size = disk.len() as u64;
            let s = sector as u64;
            assert_eq!(
                find(2, size, 512, reader(&disk)),
                Ok(Found {
                    offset: 40 * s,
                    len: 10 * s
                })
            );
            assert_eq!(
                find(1, size, 512, reader(&disk)),
                Err(TableError::Bad("GPT partition 1 is unused".into()))
            );
        }
    }

    #[test]
    fn no_table() {
        let disk = vec![0u8; 1 << 16];
        assert!(matches!(find(1, 1 << 16, 512, reader(&disk)), Err(TableError::Bad(_))));
    }
}
