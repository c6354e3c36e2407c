//! grant-probe (test only): a plugin granted a file (`file=`) and a directory (`dir=`) that,
//! at get-ready, tries to reach beyond them through the grants interface itself — the only
//! way it has to the host filesystem — and logs each outcome as `grant-probe: WHAT: refused
//! (WHY)` or `grant-probe: WHAT: SUCCEEDED`; and it checks that `read-into` fills a buffer of
//! its own. Then it serves the granted file read-only, so a test can check the server stayed
//! up and serves the right bytes, looking at each read's buffer after filling it.

use nbdbox_sdk::grants::{open_directory, open_file, File};
use nbdbox_sdk::prelude::*;
use probe_report::report;

fn probe() {
    report("open-file for a key never granted", open_file("other"));
    report("open-file on the directory key", open_file("dir"));
    report("open-directory on the file key", open_directory("file"));
    match open_directory("dir") {
        Ok(dir) => {
            for name in ["../outside.img", "/etc/passwd", "..", ".", "sub/inner.img", "sub", ""] {
                report(&format!("directory.open({name:?})"), dir.open(name, false));
            }
        }
        Err(e) => report("open-directory on the directory key", Err::<(), _>(e)),
    }
    match open_file("file") {
        Ok(file) => {
            report("write to a file granted read-only", file.write(b"x", 0));
            read_into_scratch(&file);
        }
        Err(e) => report("open-file on the file key", Err::<(), _>(e)),
    }
}

/// `read-into` must fill the buffer it is given, here one of the plugin's own (there is no
/// request buffer at get-ready): logged as `read-into a scratch buffer: matches` when it
/// holds the file's bytes.
fn read_into_scratch(file: &File) {
    let scratch = ReadBuf::new(64);
    let outcome = match (file.read_into(&scratch, 0, 64, 0), file.read(64, 0)) {
        (Ok(()), Ok(bytes)) if scratch.read(0, 64) == bytes => "matches".to_owned(),
        (Ok(()), Ok(_)) => "differs".to_owned(),
        (Err(e), _) | (_, Err(e)) => format!("failed ({e})"),
    };
    nbdbox_sdk::info(&format!("read-into a scratch buffer: {outcome}"));
}

/// Both keys are grants: the host opens them, the plugin reaches them by key name.
#[derive(Default)]
struct Probe;

impl Plugin for Probe {
    const NAME: &'static str = "grant-probe";
    const DESCRIPTION: &'static str = "Test plugin: try to reach beyond its grants";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("file", Kind::File, "The file to serve."),
        Key::new("dir", Kind::Directory, "A directory to probe."),
    ];
    type Connection = ProbeConnection;

    fn get_ready(&mut self) -> Result<()> {
        probe();
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<ProbeConnection> {
        Ok(ProbeConnection {
            file: open_file("file")?,
        })
    }
}

struct ProbeConnection {
    file: File,
}

#[nbdbox_sdk::connection]
impl Connection for ProbeConnection {
    fn get_size(&self) -> Result<u64> {
        self.file.size()
    }

    /// The whole request from the file (the host may splice it rather than copy it), then a
    /// look at its head and a second read of its back half: each must find the file's bytes,
    /// the look failing the read with EIO if not (tests/all/zero_copy.rs).
    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.file.read_into(dst, 0, count, offset)?;
        let head = count.min(16);
        if dst.read(0, head) != self.file.read(head, offset)? {
            return Err(error(
                Errno::Eio,
                "grant-probe: the buffer does not hold what read-into read",
            ));
        }
        let half = count / 2;
        self.file.read_into(dst, half, count - half, offset + u64::from(half))
    }
}

nbdbox_sdk::plugin!(Probe);
