//! log: nbdkit-log-filter(1), every call and its result as a line of `logfile=`
//! (filters/log/log.c), in nbdkit's format: Ready, Preconnect, ListExports, Connect, Read,
//! Write, Zero, Trim, Extents, Cache, Flush, Disconnect. The file is an output-file grant,
//! emptied once when the server gets ready unless `logappend=true`. Connection numbers and
//! the ids of calls that concern no connection count over all instances (host counters).
//! `logscript=` is refused: a component cannot run programs (there is no shell in the
//! sandbox). Not logged: nbdkit's "Fork", which reports that the server process forked
//! after getting ready, something a component cannot observe.

mod format;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use format::{line, shell_quote, timestamp, Entry};
use nbdbox_filter_sdk::grants::File;
use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, parse_bool};

const LOGFILE: &str = "logfile";

fn now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    timestamp(t.as_secs(), t.subsec_micros())
}

/// The next number of host counter `name` (1 first), over every instance.
fn next_number(name: &str) -> u64 {
    counter_add(name, 1) as u64
}

/// What output.c's leave_simple prints for a result: the NBD error a client will see.
fn returned<T>(result: &Result<T>) -> String {
    let Err(e) = result else {
        return "return=0".into();
    };
    let name = match e.errno {
        Errno::Erofs | Errno::Eperm => "EPERM",
        Errno::Eio => "EIO",
        Errno::Enomem => "ENOMEM",
        Errno::Efbig | Errno::Enospc => "ENOSPC",
        Errno::Eshutdown => "ESHUTDOWN",
        Errno::Enotsup => "ENOTSUP",
        Errno::Eoverflow => "EOVERFLOW",
        Errno::Einval | Errno::Eacces | Errno::Enoent => "EINVAL",
    };
    format!("return=-1 error={name}")
}

/// log.h's LOG: a call's start (with `fields`), the call, its end (the result, with what
/// `leave` makes of a success).
fn logged<T>(
    write: &dyn Fn(Entry, &str),
    fields: &str,
    call: impl FnOnce() -> Result<T>,
    leave: impl Fn(&T) -> String,
) -> Result<T> {
    write(Entry::Enter, fields);
    let result = call();
    let end = match &result {
        Ok(value) => leave(value),
        Err(_) => returned(&result),
    };
    write(Entry::Leave, &end);
    result
}

fn flag(flags: CmdFlags, which: CmdFlags) -> u8 {
    u8::from(flags.contains(which))
}

#[derive(Default)]
struct Log {
    append: bool,
    /// The log file; None when no logfile= was given (the filter then only passes calls on).
    file: Option<Rc<File>>,
    wants_file: bool,
}

impl Log {
    fn write(&self, text: &str) {
        if let Some(file) = &self.file {
            output_file::append(file, text);
        }
    }

    /// A call that concerns no connection, logged on entry and exit with an id of its own.
    fn global<T>(
        &self,
        act: &str,
        fields: &str,
        call: impl FnOnce() -> Result<T>,
        leave: impl Fn(&T) -> String,
    ) -> Result<T> {
        if self.file.is_none() {
            return call();
        }
        let id = next_number(&format!("{act} id"));
        logged(
            &|entry, fields| self.write(&line(&now(), None, entry, act, id, fields)),
            fields,
            call,
            leave,
        )
    }
}

impl Filter for Log {
    const NAME: &'static str = "log";
    const DESCRIPTION: &'static str = "Log every call and its result to a file";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            LOGFILE,
            Kind::OutputFile,
            "logfile=<FILE>  The file to place the log in.",
        ),
        Key::new(
            "logappend",
            Kind::Bool,
            "logappend=<BOOL>  True to append to the log (default false).",
        ),
        Key::new(
            "logscript",
            Kind::Text,
            "logscript=<SCRIPT>  Not supported: there is no shell in the sandbox.",
        ),
    ];
    type Connection = Logged;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            LOGFILE => self.wants_file = true,
            "logappend" => self.append = parse_bool(key, value)?,
            _ => {
                return Err(error(
                    Errno::Einval,
                    "logscript= is not supported: a component cannot run programs \
                     (there is no shell in the sandbox); use logfile= instead",
                ))
            }
        }
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        if self.wants_file {
            self.file = Some(Rc::new(output_file::open(LOGFILE, self.append)?));
            if once::first("ready") {
                // The filter itself is parallel: the stack's model is the one below.
                let model = next::get_thread_model();
                self.write(&line(
                    &now(),
                    None,
                    Entry::Print,
                    "Ready",
                    0,
                    &format!("thread_model={}", model as u8),
                ));
            }
        }
        Ok(())
    }

    fn preconnect(&self, readonly: bool) -> Result<()> {
        let fields = format!("readonly={}", u8::from(readonly));
        self.global(
            "Preconnect",
            &fields,
            || next::preconnect(readonly),
            |_| "return=0".into(),
        )
    }

    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        let fields = format!("readonly={} tls=0", u8::from(readonly));
        self.global(
            "ListExports",
            &fields,
            || next::list_exports(readonly),
            |exports| {
                let names: Vec<String> = exports.iter().map(|e| shell_quote(&e.name)).collect();
                format!("exports=({}) return=0", names.join(" "))
            },
        )
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<Logged> {
        Ok(Logged {
            log: self.file.clone().map(|file| (file, next_number("connections"))),
            export_name: export_name.into(),
            ids: Cell::new(0),
        })
    }
}

/// One connection's log: the file and the connection's number (None: nothing is logged),
/// and the ids of its calls.
struct Logged {
    log: Option<(Rc<File>, u64)>,
    export_name: String,
    ids: Cell<u64>,
}

impl Logged {
    fn write(&self, entry: Entry, act: &str, id: u64, fields: &str) {
        if let Some((file, connection)) = &self.log {
            output_file::append(file, &line(&now(), Some(*connection), entry, act, id, fields));
        }
    }

    /// log.h's LOG: the call's start, the call, its end.
    fn call<T>(&self, act: &str, fields: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
        self.call_with(act, fields, call, |_| "return=0".into())
    }

    fn call_with<T>(
        &self,
        act: &str,
        fields: &str,
        call: impl FnOnce() -> Result<T>,
        leave: impl Fn(&T) -> String,
    ) -> Result<T> {
        if self.log.is_none() {
            return call();
        }
        let id = self.ids.get() + 1;
        self.ids.set(id);
        logged(&|entry, fields| self.write(entry, act, id, fields), fields, call, leave)
    }
}

/// The extents as log.c prints them: `OFFSET LENGTH "TYPE"` in hex, type hole,zero.
fn extents_fields(extents: &[Extent]) -> String {
    let shown: Vec<String> = extents
        .iter()
        .map(|e| {
            let mut kinds = Vec::new();
            if e.flags.contains(ExtentFlags::HOLE) {
                kinds.push("hole");
            }
            if e.flags.contains(ExtentFlags::ZERO) {
                kinds.push("zero");
            }
            format!("{:#x} {:#x} \"{}\"", e.offset, e.length, kinds.join(","))
        })
        .collect();
    format!("extents=({}) return=0", shown.join(" "))
}

fn mode(zero: bool, emulate: bool) -> u8 {
    match (zero, emulate) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    }
}

impl FilterConnection for Logged {
    /// log.c's prepare: the export as the layers below present it.
    fn prepare(&self, next: &Next) -> Result<()> {
        if self.log.is_none() {
            return Ok(());
        }
        let size = next.get_size()?;
        let c = next.capabilities()?;
        let bs = next.block_size()?.unwrap_or(BlockSize {
            minimum: 0,
            preferred: 0,
            maximum: 0,
        });
        let fields = format!(
            "export={} tls=0 size={size:#x} minsize={:#x} prefsize={:#x} maxsize={:#x} write={} flush={} \
             rotational={} trim={} zero={} fua={} extents={} cache={} fast_zero={}",
            shell_quote(&self.export_name),
            bs.minimum,
            bs.preferred,
            bs.maximum,
            u8::from(c.can_write),
            u8::from(c.can_flush),
            u8::from(c.is_rotational),
            u8::from(c.can_trim),
            mode(c.can_zero != ZeroMode::None, c.can_zero == ZeroMode::Emulate),
            mode(c.can_fua != FuaMode::None, c.can_fua == FuaMode::Emulate),
            u8::from(c.can_extents),
            mode(c.can_cache != CacheMode::None, c.can_cache == CacheMode::Emulate),
            u8::from(c.can_fast_zero),
        );
        self.write(Entry::Print, "Connect", 0, &fields);
        Ok(())
    }

    fn finalize(&self, _next: &Next) -> Result<()> {
        if self.log.is_some() {
            self.write(
                Entry::Print,
                "Disconnect",
                0,
                &format!("transactions={}", self.ids.get()),
            );
        }
        Ok(())
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let fields = format!("offset={offset:#x} count={count:#x}");
        self.call("Read", &fields, || next.pread(dst, count, offset, flags))
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let fields = format!("offset={offset:#x} count={count:#x} fua={}", flag(flags, CmdFlags::FUA));
        self.call("Write", &fields, || next.pwrite(src, count, offset, flags))
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        self.call("Flush", "", || next.flush(flags))
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let fields = format!("offset={offset:#x} count={count:#x} fua={}", flag(flags, CmdFlags::FUA));
        self.call("Trim", &fields, || next.trim(count, offset, flags))
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let fields = format!(
            "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
            flag(flags, CmdFlags::MAY_TRIM),
            flag(flags, CmdFlags::FUA),
            flag(flags, CmdFlags::FAST_ZERO)
        );
        self.call("Zero", &fields, || next.zero(count, offset, flags))
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        let fields = format!(
            "offset={offset:#x} count={count:#x} req_one={}",
            flag(flags, CmdFlags::REQ_ONE)
        );
        self.call_with(
            "Extents",
            &fields,
            || next.extents(count, offset, flags),
            |extents| extents_fields(extents),
        )
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let fields = format!("offset={offset:#x} count={count:#x}");
        self.call("Cache", &fields, || next.cache(count, offset, flags))
    }
}

nbdbox_filter_sdk::filter!(Log);
