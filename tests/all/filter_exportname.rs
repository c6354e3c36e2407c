//! The built-in `exportname` filter: what NBD_OPT_LIST shows, what "" stands for, strict
//! names and descriptions, against nbdkit's exportname filter over a file plugin serving a
//! directory.

use crate::support::*;
use std::fs;

fn exports(dir: &TempDir) -> String {
    let d = dir.str("exports");
    fs::create_dir_all(&d).unwrap();
    for (name, seed) in [("file1", 1u64), ("file2", 2), ("file3", 3)] {
        fs::write(
            dir.join(&format!("exports/{name}")),
            pattern(seed, 4096 * seed as usize),
        )
        .unwrap();
    }
    d
}

/// The list, then the size of the default export and of file3.
fn script() -> &'static str {
    "nbdinfo --list --json \"$uri\" | grep -E '\"(export-name|description)\"' ; \
     nbdinfo --size \"$uri\" 2>&1 | grep -v -i socket ; \
     nbdinfo --size \"$(echo \"$uri\" | sed -E 's|^nbd\\+unix://[^?]*|nbd+unix:///file3|')\" 2>&1 | grep -v -i socket; true"
}

#[test]
fn lists_defaults_and_strictness_as_nbdkit() {
    let dir = TempDir::new("expn");
    let d = exports(&dir);
    let dir_arg = format!("dir={d}");
    let sets: &[&[&str]] = &[
        &[],
        &["default-export=file2"],
        &["exportname-list=empty"],
        &["exportname-list=defaultonly", "default-export=file1"],
        &["exportname-list=explicit", "exportname=file1", "exportname=file3"],
        &[
            "exportname-list=explicit",
            "exportname=file1",
            "exportname=file3",
            "exportname-strict=true",
        ],
        &[
            "exportdesc=fixed:a disk",
            "exportname-list=explicit",
            "exportname=file2",
        ],
        &["exportdesc=none"],
    ];
    for set in sets {
        let mut args = vec!["--filter=exportname", "file", &dir_arg];
        args.extend(*set);
        same_as_nbdkit(&args, script());
    }
}

#[test]
fn listing_refused_and_scripts_refused() {
    let dir = TempDir::new("expnerr");
    let d = exports(&dir);
    let dir_arg = format!("dir={d}");
    let (ours, theirs) = both(
        &["--filter=exportname", "file", &dir_arg, "exportname-list=error"],
        "nbdinfo --list \"$uri\" >/dev/null 2>&1 || echo LIST-REFUSED",
    );
    assert_eq!((ours.trim(), theirs.trim()), ("LIST-REFUSED", "LIST-REFUSED"));
    let o = run_captive(
        &["--filter=exportname", "file", &dir_arg, "exportdesc=script:ls"],
        "true",
    );
    assert_exit1(&o);
    assert!(stderr(&o).contains("sandbox"), "{}", describe(&o));
}
