//! stats: nbdkit-stats-filter(1), statistics of the requests over all connections written to
//! `statsfile=` when the server exits (at cleanup, which the host runs on exit and on
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT). `statsappend=true` appends instead of replacing the file;
//! `statsthreshold=PERCENT` (default 95, 0 for none) sets how much of the size and alignment
//! histograms is printed. The numbers are host counters: every instance adds to them.

mod report;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, grants::File, parse_bool};
use report::{classify, SizeClass, Stat, KINDS};

const STATSFILE: &str = "statsfile";

/// The kind of request, as an index into [`KINDS`].
#[derive(Clone, Copy)]
enum Request {
    Read,
    Write,
    Trim,
    Zero,
    Extents,
    Cache,
    Flush,
}

fn now_usecs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn counter(name: &str) -> u64 {
    counter_add(name, 0) as u64
}

struct Stats {
    append: bool,
    /// statsthreshold / 100.
    threshold: f64,
    seen_file: bool,
    file: Option<File>,
    /// When the server got ready, in microseconds since the epoch.
    started: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            append: false,
            threshold: 0.95,
            seen_file: false,
            file: None,
            started: 0,
        }
    }
}

impl Filter for Stats {
    const NAME: &'static str = "stats";
    const DESCRIPTION: &'static str = "Statistics of the requests, written at exit";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            STATSFILE,
            Kind::OutputFile,
            "statsfile=<FILE>  (required) The file to place the log in.",
        ),
        Key::new(
            "statsappend",
            Kind::Bool,
            "statsappend=<BOOL>  True to append to the log (default false).",
        ),
        Key::new(
            "statsthreshold",
            Kind::Text,
            "statsthreshold=<PERCENT>  How much of the request histograms to print (default 95).",
        ),
    ];
    type Connection = Recording;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            STATSFILE => self.seen_file = true,
            "statsappend" => self.append = parse_bool(key, value)?,
            _ => {
                let percent =
                    nbdkit_parse::parse_int("printing threshold", value).map_err(|why| error(Errno::Einval, why))?;
                if !(0..=100).contains(&percent) {
                    return Err(error(
                        Errno::Einval,
                        "statsthreshold must be between 0 and 100 (percent)",
                    ));
                }
                self.threshold = f64::from(percent) / 100.0;
            }
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if !self.seen_file {
            return Err(error(Errno::Einval, "stats filter requires statsfile parameter"));
        }
        Ok(())
    }

    /// The file is opened (and emptied) and the clock started as the server gets ready.
    fn get_ready(&mut self) -> Result<()> {
        self.file = Some(output_file::open(STATSFILE, self.append)?);
        self.started = once::value("started", now_usecs);
        Ok(())
    }

    fn cleanup(&mut self) {
        let elapsed = now_usecs().saturating_sub(self.started);
        if let (Some(file), true) = (&self.file, elapsed > 0) {
            output_file::append(file, &report::report(&totals(), elapsed, self.threshold));
        }
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Recording> {
        Ok(Recording {
            histograms: self.threshold != 0.0,
        })
    }
}

/// Every kind's totals, from the host counters [`Recording::record`] adds to.
fn totals() -> [Stat; 7] {
    KINDS.map(|kind| {
        let mut stat = Stat {
            ops: counter(&format!("{kind} ops")),
            bytes: counter(&format!("{kind} bytes")),
            usecs: counter(&format!("{kind} usecs")),
            ..Stat::default()
        };
        for bits in 0..64 {
            let bytes = counter(&format!("{kind} {bits} bytes"));
            if bytes == 0 {
                continue;
            }
            let by_alignment = (-1..64)
                .filter_map(|alignment| {
                    let n = counter(&format!("{kind} {bits} {alignment}"));
                    (n > 0).then_some((alignment, n))
                })
                .collect();
            stat.classes.insert(bits, SizeClass { by_alignment, bytes });
        }
        stat
    })
}

/// A connection: it times each request and adds the successful ones to the counters.
struct Recording {
    histograms: bool,
}

impl Recording {
    /// Run `call` on the layer below and count it as `kind` of `size` bytes at `offset` if
    /// it succeeds, as stats.cpp's record_stat.
    fn record<T>(&self, kind: Request, size: u64, offset: u64, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = call();
        if result.is_ok() {
            let name = KINDS[kind as usize];
            let usecs = started.elapsed().as_micros() as i64;
            counter_add(&format!("{name} ops"), 1);
            counter_add(&format!("{name} bytes"), size as i64);
            counter_add(&format!("{name} usecs"), usecs);
            if self.histograms && size != 0 {
                let (bits, alignment) = classify(size, offset);
                counter_add(&format!("{name} {bits} {alignment}"), 1);
                counter_add(&format!("{name} {bits} bytes"), size as i64);
            }
        }
        result
    }
}

impl FilterConnection for Recording {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(Request::Read, count.into(), offset, || {
            next.pread(dst, count, offset, flags)
        })
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(Request::Write, count.into(), offset, || {
            next.pwrite(src, count, offset, flags)
        })
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(Request::Trim, count, offset, || next.trim(count, offset, flags))
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(Request::Zero, count, offset, || next.zero(count, offset, flags))
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.record(Request::Extents, count, offset, || next.extents(count, offset, flags))
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.record(Request::Cache, count, offset, || next.cache(count, offset, flags))
    }

    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        self.record(Request::Flush, 0, 0, || next.flush(flags))
    }
}

nbdbox_filter_sdk::filter!(Stats);
