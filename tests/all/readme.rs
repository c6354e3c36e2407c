//! The README's tables of built-in plugins and filters are generated: host/build.rs reads each
//! built-in's NAME line from its own README.md. `NBDBOX_BLESS=1 cargo test --release --
//! readme::` writes the tables into README.md after adding or renaming a built-in.

use std::fs;
use std::path::Path;

const BEGIN: &str = "<!-- built-ins: generated from each component's README.md by host/build.rs -->\n";
const END: &str = "<!-- end of built-ins -->";

#[test]
fn the_tables_of_built_ins_are_generated_from_their_readmes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = fs::read_to_string(&path).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README.md marks where the built-in tables go")
        + BEGIN.len();
    let end = start + readme[start..].find(END).expect("README.md marks where the tables end");
    if std::env::var_os("NBDBOX_BLESS").is_some() {
        let blessed = format!("{}{}{}", &readme[..start], crate::BUILTIN_TABLES, &readme[end..]);
        fs::write(&path, blessed).unwrap();
        return;
    }
    assert!(
        readme[start..end] == *crate::BUILTIN_TABLES,
        "README.md's tables are out of date: run `NBDBOX_BLESS=1 cargo test --release -- readme::`"
    );
}
