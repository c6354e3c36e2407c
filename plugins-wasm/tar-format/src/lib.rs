//! Find a member's data in an uncompressed tar archive by walking its headers.
//!
//! Plain Rust (no WIT types) so it can be unit-tested natively. Understands ustar (name =
//! prefix/name), old v7 and GNU headers, GNU long names (typeflag `L`), pax extended headers
//! (`x`: `path=` and `size=` records; `g` global headers are skipped) and base-256 sizes. The
//! archive ends at two zero blocks (or at end of file).

/// Tar block size.
pub const BLOCK: u64 = 512;

/// Largest long-name or pax header this scanner reads into memory.
const META_LIMIT: u64 = 16 << 20;

/// Where a member's bytes are in the archive.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ScanError<E> {
    /// Reading the archive failed.
    Read(E),
    /// The archive is damaged or not a tar file.
    Corrupt(String),
    /// The member exists but cannot be served in place.
    Unsupported(String),
    /// No regular file of that name.
    NotFound,
}

/// One parsed header block.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Vec<u8>,
    pub size: u64,
    pub typeflag: u8,
}

/// A NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A numeric header field: octal (space/NUL padded) or GNU base-256.
pub fn parse_number(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err("negative base-256 number".into());
        }
        let mut value = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or("base-256 number overflows")?;
        }
        return Ok(value);
    }
    let mut value: u64 = 0;
    let mut digits = field.iter().skip_while(|&&b| b == b' ' || b == 0).peekable();
    while let Some(&b) = digits.next_if(|b| (b'0'..=b'7').contains(b)) {
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or("octal number overflows")?;
    }
    match digits.next() {
        None | Some(b' ') | Some(0) => Ok(value),
        Some(&b) => Err(format!("bad character {:?} in octal number", b as char)),
    }
}

/// Parse one non-zero header block, checking its checksum.
pub fn parse_header(block: &[u8]) -> Result<Header, String> {
    if block.len() != BLOCK as usize {
        return Err("short header block".into());
    }
    let stored = parse_number(&block[148..156])?;
    let spaces = 8 * u64::from(b' ');
    let unsigned: u64 = block.iter().map(|&b| u64::from(b)).sum::<u64>()
        - block[148..156].iter().map(|&b| u64::from(b)).sum::<u64>()
        + spaces;
    let signed: i64 = block.iter().map(|&b| i64::from(b as i8)).sum::<i64>()
        - block[148..156].iter().map(|&b| i64::from(b as i8)).sum::<i64>()
        + spaces as i64;
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err("header checksum mismatch (not a tar file?)".into());
    }
    let size = parse_number(&block[124..136])?;
    let mut name = cstr(&block[0..100]).to_vec();
    // POSIX ustar splits long names into prefix/name; GNU ("ustar  \0") uses that area for
    // other things.
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    Ok(Header {
        name,
        size,
        typeflag: block[156],
    })
}

/// What a pax extended header says about the next member.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pax {
    pub path: Option<Vec<u8>>,
    pub size: Option<u64>,
    /// GNU sparse-file records: the data is not stored contiguously.
    pub sparse: bool,
}

/// Parse pax records, "LEN KEY=VALUE\n" each.
pub fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while let Some(&first) = data.first() {
        if first == 0 {
            break; // NUL padding after the last record
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("pax record without length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad pax record length")?;
        if len < space + 3 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed pax record".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or("pax record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = (!value.is_empty()).then(|| value.to_vec()),
            b"size" => {
                pax.size = if value.is_empty() {
                    None
                } else {
                    Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or("bad pax size")?,
                    )
                }
            }
            k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
        data = &data[len..];
    }
    Ok(pax)
}

/// Names compare without leading "./" and trailing "/".
fn normalize(mut name: &[u8]) -> &[u8] {
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

/// Types with no data blocks whatever their size field says (as Go's and Python's readers).
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|v| v / BLOCK * BLOCK)
}

/// Read exactly `len` bytes at `offset` (the reader may return less per call).
fn read_exact<E>(
    read: &mut impl FnMut(u64, u32) -> Result<Vec<u8>, E>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, ScanError<E>> {
    if len > META_LIMIT {
        return Err(ScanError::Unsupported(format!(
            "extended header at offset {offset} is too large ({len} bytes)"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64) as u32;
        let chunk = read(offset + out.len() as u64, want).map_err(ScanError::Read)?;
        if chunk.is_empty() {
            return Err(ScanError::Corrupt(format!(
                "unexpected end of file at offset {}",
                offset + out.len() as u64
            )));
        }
        out.extend_from_slice(&chunk[..chunk.len().min(want as usize)]);
    }
    Ok(out)
}

/// Find regular file `wanted` in an archive of `archive_size` bytes; `read(offset, count)`
/// reads from the archive. If the name occurs more than once the last one wins (as tar
/// extraction would leave it).
pub fn find_member<E>(
    wanted: &str,
    archive_size: u64,
    mut read: impl FnMut(u64, u32) -> Result<Vec<u8>, E>,
) -> Result<Member, ScanError<E>> {
    let wanted = normalize(wanted.as_bytes());
    let corrupt = |off: u64, why: &str| ScanError::Corrupt(format!("at offset {off}: {why}"));
    let mut off: u64 = 0;
    let mut zero_blocks = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax = Pax::default();
    let mut found = None;
    // Header blocks must lie entirely inside the archive.
    while off.checked_add(BLOCK).is_some_and(|end| end <= archive_size) {
        let block = read_exact(&mut read, off, BLOCK)?;
        if block.iter().all(|&b| b == 0) {
            zero_blocks += 1;
            off += BLOCK;
            if zero_blocks == 2 {
                break;
            }
            continue;
        }
        zero_blocks = 0;
        let header = parse_header(&block).map_err(|why| corrupt(off, &why))?;
        let data = off + BLOCK;
        let data_len = match header.typeflag {
            b'L' => {
                let name = read_exact(&mut read, data, header.size)?;
                long_name = Some(cstr(&name).to_vec());
                header.size
            }
            b'x' => {
                let records = read_exact(&mut read, data, header.size)?;
                pax = parse_pax(&records).map_err(|why| corrupt(off, &why))?;
                header.size
            }
            // Long link names and global pax headers: nothing we need.
            b'K' | b'g' => header.size,
            typeflag => {
                let name = pax.path.take().or(long_name.take()).unwrap_or(header.name);
                let size = pax.size.take().unwrap_or(header.size);
                let sparse = std::mem::take(&mut pax.sparse);
                let data_len = if header_only(typeflag) { 0 } else { size };
                if normalize(&name) == wanted {
                    match typeflag {
                        b'0' | 0 | b'7' if !sparse => {
                            let end = data
                                .checked_add(size)
                                .ok_or_else(|| corrupt(off, "member size overflows"))?;
                            if end > archive_size {
                                return Err(corrupt(off, "member extends past the end of the archive"));
                            }
                            found = Some(Member { offset: data, size });
                        }
                        b'0' | 0 | b'7' | b'S' => {
                            return Err(ScanError::Unsupported(
                                "it is a sparse member, which cannot be served in place".into(),
                            ))
                        }
                        _ => {}
                    }
                }
                data_len
            }
        };
        off = round_up(data_len)
            .and_then(|n| data.checked_add(n))
            .ok_or_else(|| corrupt(off, "member size overflows"))?;
    }
    found.ok_or(ScanError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a header block like tar does (octal fields, valid checksum).
    fn header(name: &str, size: u64, typeflag: u8, ustar_prefix: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..108].copy_from_slice(b"0000644\0");
        let s = format!("{size:011o}\0");
        b[124..136].copy_from_slice(s.as_bytes());
        b[156] = typeflag;
        match ustar_prefix {
            Some(prefix) => {
                b[257..263].copy_from_slice(b"ustar\0");
                b[263..265].copy_from_slice(b"00");
                b[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            }
            None => b[257..265].copy_from_slice(b"ustar  \0"),
        }
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    fn data(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        // The length counts its own digits.
        let mut len = body.len() + 1;
        while body.len() + len.to_string().len() != len {
            len = body.len() + len.to_string().len();
        }
        let rec = format!("{len}{body}");
        assert_eq!(rec.len(), len);
        rec
    }

    fn find(archive: &[u8], name: &str) -> Result<Member, ScanError<()>> {
        find_member(name, archive.len() as u64, |off, n| {
            let s = off as usize;
            Ok(archive[s..(s + n as usize).min(archive.len())].to_vec())
        })
    }

    fn sample() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(header("dir/", 0, b'5', None));
        t.extend(header("dir/a.txt", 5, b'0', None));
        t.extend(data(b"hello"));
        // GNU long name.
        let long = "x".repeat(150) + "/disk.img";
        t.extend(header("././@LongLink", long.len() as u64 + 1, b'L', None));
        t.extend(data(format!("{long}\0").as_bytes()));
        t.extend(header(&long[..99], 1000, b'0', None));
        t.extend(data(&[7u8; 1000]));
        // ustar prefix.
        t.extend(header("b.bin", 3, b'0', Some("some/deep/path")));
        t.extend(data(b"abc"));
        // pax path + size override (header size field says 1).
        let recs = pax_record("path", "pax/named file") + &pax_record("size", "700");
        t.extend(header("PaxHeaders/x", recs.len() as u64, b'x', Some("")));
        t.extend(data(recs.as_bytes()));
        t.extend(header("pax/short", 1, b'0', Some("")));
        t.extend(data(&[1u8; 700]));
        // A global header and a symlink with a bogus size.
        let g = pax_record("comment", "hi");
        t.extend(header("pax_global_header", g.len() as u64, b'g', Some("")));
        t.extend(data(g.as_bytes()));
        t.extend(header("link", 999, b'2', None));
        t.extend(header("last", 2, b'0', None));
        t.extend(data(b"zz"));
        t.extend([0u8; 1024]);
        t.extend([0xffu8; 512]); // garbage after the end marker is never read
        t
    }

    #[test]
    fn finds_members() {
        let t = sample();
        let m = find(&t, "dir/a.txt").unwrap();
        assert_eq!(m, Member { offset: 1024, size: 5 });
        assert_eq!(&t[1024..1029], b"hello");
        let long = "x".repeat(150) + "/disk.img";
        let m = find(&t, &long).unwrap();
        assert_eq!(m.size, 1000);
        assert_eq!(&t[m.offset as usize..m.offset as usize + 1000], &[7u8; 1000][..]);
        let m = find(&t, "some/deep/path/b.bin").unwrap();
        assert_eq!(&t[m.offset as usize..m.offset as usize + 3], b"abc");
        let m = find(&t, "pax/named file").unwrap();
        assert_eq!(m.size, 700);
        assert_eq!(t[m.offset as usize], 1);
        assert_eq!(find(&t, "./pax/named file").unwrap(), m);
        let m = find(&t, "last").unwrap();
        assert_eq!(&t[m.offset as usize..m.offset as usize + 2], b"zz");
        assert_eq!(find(&t, "pax/short"), Err(ScanError::NotFound));
        assert_eq!(find(&t, "dir"), Err(ScanError::NotFound));
        assert_eq!(find(&t, "missing"), Err(ScanError::NotFound));
    }

    #[test]
    fn last_duplicate_wins_and_truncation() {
        let mut t = Vec::new();
        t.extend(header("f", 1, b'0', None));
        t.extend(data(b"1"));
        t.extend(header("f", 1, b'0', None));
        t.extend(data(b"2"));
        // No end-of-archive marker at all: still fine.
        assert_eq!(find(&t, "f").unwrap(), Member { offset: 1536, size: 1 });
        let mut bad = header("big", 4096, b'0', None);
        bad.extend([0u8; 512]);
        assert!(matches!(find(&bad, "big"), Err(ScanError::Corrupt(_))));
    }

    #[test]
    fn rejects_garbage() {
        let junk = vec![0x41u8; 2048];
        assert!(matches!(find(&junk, "a"), Err(ScanError::Corrupt(_))));
        assert_eq!(find(&[], "a"), Err(ScanError::NotFound));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"00000001750\0"), Ok(1000));
        assert_eq!(parse_number(b"   1750 \0\0\0\0"), Ok(1000));
        assert_eq!(parse_number(b"\0\0\0\0"), Ok(0));
        let mut b256 = [0u8; 12];
        b256[0] = 0x80;
        b256[7] = 0x02; // 2 << 32
        assert_eq!(parse_number(&b256), Ok(2 << 32));
        b256[0] = 0xff;
        assert!(parse_number(&b256).is_err());
        assert!(parse_number(b"12x4").is_err());
    }

    #[test]
    fn pax_parsing() {
        let recs = pax_record("path", "a=b") + &pax_record("mtime", "1.5") + &pax_record("size", "12345678901");
        let p = parse_pax(recs.as_bytes()).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a=b"[..]));
        assert_eq!(p.size, Some(12_345_678_901));
        assert!(!p.sparse);
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"garbage").is_err());
        assert!(
            parse_pax(&pax_record("GNU.sparse.major", "1").into_bytes())
                .unwrap()
                .sparse
        );
    }
}
