//! The built-in `swab` filter against nbdkit's: the same bytes read (every swab-bits, sizes
//! that are not whole words), the same bytes written below, the same size, block sizes and
//! flags, the same refusal of unaligned requests and the same map in whole words.

use crate::differential::*;
use crate::support::*;
use std::fs;

#[test]
fn reads_match_nbdkit() {
    tool("nbdcopy");
    let dir = TempDir::new("swabread");
    for bits in ["8", "16", "32", "64"] {
        for size in ["1M", "1001"] {
            let bits_arg = format!("swab-bits={bits}");
            let args = ["--filter=swab", "pattern", size, &bits_arg];
            let (ours, theirs) = (dir.str("ours"), dir.str("theirs"));
            let copy = |out: &str| format!("nbdcopy \"$uri\" {}", shell_quote(out));
            assert_success(&run_captive(&args, &copy(&ours)));
            assert_success(&nbdkit_captive(&args, &copy(&theirs)));
            let (ours, theirs) = (fs::read(ours).unwrap(), fs::read(theirs).unwrap());
            assert!(
                ours == theirs,
                "swab-bits={bits} size {size}: bytes differ from nbdkit's"
            );
            same_as_nbdkit(&args, NBDINFO);
        }
    }
}

#[test]
fn writes_land_swapped_as_with_nbdkit() {
    let dir = TempDir::new("swabwrite");
    let py = r#"
outcome("pwrite", lambda: h.pwrite(bytes(range(64)) * 8, 4096))
outcome("pwrite-unaligned", lambda: h.pwrite(b"abc", 3))
outcome("pread", lambda: h.pread(64, 4096))
outcome("pread-unaligned", lambda: h.pread(8, 1))
outcome("zero-unaligned", lambda: h.zero(6, 8))
outcome("trim", lambda: h.trim(8, 8192))
"#;
    let script = nbdsh_loose(&dir, "write", py);
    for bits in ["16", "32", "64"] {
        let (ours, theirs) = (dir.str("ours.img"), dir.str("theirs.img"));
        for f in [&ours, &theirs] {
            fs::write(f, pattern(7, 1 << 20)).unwrap();
        }
        let bits_arg = format!("swab-bits={bits}");
        let (o, t) = (
            run_captive(&["--filter=swab", "file", &ours, &bits_arg], &script),
            nbdkit_captive(&["--filter=swab", "file", &theirs, &bits_arg], &script),
        );
        let out = assert_success(&o);
        assert_eq!(out, assert_success(&t), "swab-bits={bits}");
        assert!(out.contains("pread-unaligned EINVAL"), "{out}");
        assert!(
            fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(),
            "swab-bits={bits}: the files differ"
        );
    }
}

#[test]
fn map_is_in_whole_words_as_with_nbdkit() {
    let dir = TempDir::new("swabmap");
    let f = dir.str("sparse.img");
    let file = fs::File::create(&f).unwrap();
    file.set_len(4 << 20).unwrap();
    let data = fs::OpenOptions::new().write(true).open(&f).unwrap();
    use std::os::unix::fs::FileExt;
    data.write_all_at(&[1; 8192], 1 << 20).unwrap();
    for bits in ["16", "64"] {
        same_as_nbdkit(&["--filter=swab", "file", &f, &format!("swab-bits={bits}")], MAP);
    }
}

#[test]
fn bad_bits_are_refused_as_by_nbdkit() {
    for bad in ["swab-bits=0", "swab-bits=24", "swab-bits=x", "swab-bits=128"] {
        both_refuse(&["--filter=swab", "null", "1M", bad]);
    }
}
