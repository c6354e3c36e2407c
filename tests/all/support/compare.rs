//! Running one command line under nbdbox and under Debian's nbdkit and comparing what the
//! same client script printed (the filter modules' differential checks), and sparse test
//! images with a known data/hole layout.

use super::clients::{nbdkit_captive, run_tool};
use super::process::{assert_success, run_captive};
use super::temp::{pattern, TempDir};
use std::fs;
use std::io::{Seek, SeekFrom, Write};

/// nbdinfo's description of the export (minus the `uri:` line, which names the socket)
/// and its map.
pub const INFO_AND_MAP: &str = "nbdinfo \"$uri\" | grep -v 'uri:' && nbdinfo --map \"$uri\"";

/// Run `script` with `args` under nbdbox and under nbdkit; both must succeed. Returns what
/// each printed: (nbdbox, nbdkit).
pub fn both(args: &[&str], script: &str) -> (String, String) {
    let ours = assert_success(&run_captive(args, script));
    let theirs = assert_success(&nbdkit_captive(args, script));
    (ours, theirs)
}

/// Like [`both`], for a command line that changes the file `img`: each server gets a copy
/// of it made before either runs (`IMG.ours`, `IMG.theirs`), and `args` builds the command
/// line for a path. Returns what each printed and the copies' paths.
pub fn both_on_copies(img: &str, args: impl Fn(&str) -> Vec<String>, script: &str) -> [(String, String); 2] {
    let copies = [format!("{img}.ours"), format!("{img}.theirs")];
    for copy in &copies {
        // Holes stay holes, so that maps compare.
        assert_success(&run_tool("cp", &["--sparse=always", img, copy], None));
    }
    let run = |copy: &str, nbdkit: bool| {
        let args = args(copy);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = if nbdkit {
            nbdkit_captive(&args, script)
        } else {
            run_captive(&args, script)
        };
        assert_success(&o)
    };
    let [ours, theirs] = copies;
    [(run(&ours, false), ours), (run(&theirs, true), theirs)]
}

/// Run `script` under both servers and assert they printed the same; returns it.
#[track_caller]
pub fn same_as_nbdkit(args: &[&str], script: &str) -> String {
    let (ours, theirs) = both(args, script);
    assert_eq!(ours, theirs, "nbdbox and nbdkit differ for {args:?}");
    ours
}

/// A file `dir/NAME` of `size` bytes that is a hole except for pattern data at the given
/// 4 KiB-aligned (offset, len) pieces: its path and contents.
pub fn sparse_image(dir: &TempDir, name: &str, size: u64, data: &[(u64, usize)]) -> (String, Vec<u8>) {
    let path = dir.str(name);
    let mut f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut image = vec![0u8; size as usize];
    for (i, &(offset, len)) in data.iter().enumerate() {
        assert_eq!(offset % 4096, 0, "data pieces must be 4 KiB aligned");
        let bytes = pattern(500 + i as u64, len);
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&bytes).unwrap();
        image[offset as usize..offset as usize + len].copy_from_slice(&bytes);
    }
    f.sync_all().unwrap();
    (path, image)
}
