//! WASI for components: every interface a toolchain's runtime may import is linked, and
//! nothing is granted. No preopened directory (every filesystem call finds nothing), every
//! socket address refused and name lookup off, no environment or arguments, stdin empty.
//! Components built by other toolchains (componentize-py, jco, wasi-sdk, TinyGo) import more
//! WASI than they use; they load, and still reach nothing. Files come as grants instead.
//!
//! A component's stdout and stderr become lines in the server's log, tagged with its name:
//! the process's own stdout may be the NBD stream (`-s`).

use crate::log::{Level, Log};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiView};

/// The WASI context of one instance: nothing granted (the builder's defaults deny every
/// socket address, TCP, UDP and name lookup, and preopen nothing).
pub(crate) fn context(name: Arc<str>, log: Log) -> WasiCtx {
    WasiCtx::builder()
        .stdout(ComponentOutput::new(name.clone(), log.clone(), Level::Debug))
        .stderr(ComponentOutput::new(name, log, Level::Warning))
        .build()
}

pub(crate) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)
}

/// Longest partial line kept before it is logged anyway.
const MAX_LINE: usize = 4096;

/// A component's stdout or stderr: whole lines go to the log.
#[derive(Clone)]
struct ComponentOutput {
    name: Arc<str>,
    log: Log,
    level: Level,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl ComponentOutput {
    fn new(name: Arc<str>, log: Log, level: Level) -> ComponentOutput {
        ComponentOutput {
            name,
            log,
            level,
            pending: Arc::default(),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        if pending.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        self.log
            .component(&self.name, self.level, &String::from_utf8_lossy(line));
    }
}

impl IsTerminal for ComponentOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ComponentOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for ComponentOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        ComponentOutput::write(self, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for ComponentOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for ComponentOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
