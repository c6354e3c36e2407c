//! The `http` and `streams` interfaces: a component reaches the origins and endpoints granted
//! for its own config keys, through the host's client (see `runtime::network`).

use super::buffers::{read_target, write_source};
use super::ImportError;
use crate::api::{self, ConfigKind, Errno};
use crate::runtime::bindings::nbdbox::plugin::http::{
    self as wit_http, Header, HostOrigin, Method, Object, Options, Response,
};
use crate::runtime::bindings::nbdbox::plugin::streams::{self as wit_streams, HostSocket};
use crate::runtime::grants::Grant;
use crate::runtime::network::{self, Endpoint, HttpOptions, NetGrant, Origin};
use crate::runtime::resources::{HttpOrigin, NetStream, ReadBuf, WriteBuf};
use crate::runtime::state::StoreData;
use std::time::Duration;
use wasmtime::component::Resource;

type Answer<T> = Result<T, ImportError>;

fn refused(errno: Errno, message: String) -> ImportError {
    api::Error::new(errno, message).into()
}

fn headers(list: Vec<Header>) -> Vec<network::Header> {
    list.into_iter()
        .map(|h| network::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

/// The largest buffer a stream receives into component memory at once.
const MAX_RECEIVE: u32 = crate::protocol::consts::MAX_REQUEST_SIZE;

impl StoreData {
    fn net_grant(&self, key: &str, kinds: &[ConfigKind]) -> Option<&NetGrant> {
        match self.env.grant(key, kinds) {
            Some(Grant::Net(grant)) => Some(grant),
            _ => None,
        }
    }

    /// The bytes of a file grant for `key` (cainfo=), read whole.
    fn granted_bytes(&self, key: &str) -> Answer<Vec<u8>> {
        match self.env.grant(key, &[ConfigKind::File, ConfigKind::InputFile]) {
            Some(Grant::File { file, .. }) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let mut bytes = super::buffers::allocate(len.min(u64::from(MAX_RECEIVE)) as usize)?;
                std::os::unix::fs::FileExt::read_exact_at(&**file, &mut bytes, 0)
                    .map_err(|e| refused(Errno::Io, format!("{key}: {e}")))?;
                Ok(bytes)
            }
            _ => Err(refused(Errno::Acces, format!("no file was granted for key '{key}'"))),
        }
    }

    /// Every file beneath a directory grant for `key` (capath=).
    fn granted_directory_files(&self, key: &str) -> Answer<Vec<Vec<u8>>> {
        let Some(Grant::Directory { dir, .. }) = self
            .env
            .grant(key, &[ConfigKind::Directory, ConfigKind::InputDirectory])
        else {
            return Err(refused(
                Errno::Acces,
                format!("no directory was granted for key '{key}'"),
            ));
        };
        let names = crate::runtime::grants::list(dir).map_err(|e| refused(Errno::Io, format!("{key}: {e}")))?;
        names
            .iter()
            .map(|name| {
                let (file, _) = crate::runtime::grants::open_beneath(dir, name, false)
                    .map_err(|e| refused(Errno::Io, format!("{key}/{name}: {e}")))?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::BufReader::new(file), &mut bytes)
                    .map_err(|e| refused(Errno::Io, format!("{key}/{name}: {e}")))?;
                Ok(bytes)
            })
            .collect()
    }
}

impl wit_http::Host for StoreData {
    fn open(&mut self, key: String, options: Options) -> Answer<Resource<HttpOrigin>> {
        let Some(NetGrant::Url(grant)) = self.net_grant(&key, &[ConfigKind::Url]) else {
            return Err(refused(Errno::Acces, format!("no URL was granted for key '{key}'")));
        };
        let grant = grant.clone();
        let options = HttpOptions {
            ca_file: options
                .ca_file_key
                .as_deref()
                .map(|k| self.granted_bytes(k))
                .transpose()?,
            ca_directory: options
                .ca_directory_key
                .as_deref()
                .map(|k| self.granted_directory_files(k))
                .transpose()?,
            verify_tls: options.verify_tls,
            timeout: (options.timeout_seconds > 0).then(|| Duration::from_secs(options.timeout_seconds.into())),
            connect_timeout: Duration::from_secs(match options.connect_timeout_seconds {
                0 => 30,
                seconds => seconds.into(),
            }),
            follow_redirects: options.follow_redirects,
            user_agent: options.user_agent,
            connections: options.connections.clamp(1, 64) as usize,
        };
        let origin = Origin::open(grant, options)?;
        Ok(self.table.push(HttpOrigin(origin))?)
    }
}

impl HostOrigin for StoreData {
    fn url(&mut self, origin: Resource<HttpOrigin>) -> wasmtime::Result<String> {
        Ok(self.table.get(&origin)?.0.url())
    }

    fn probe(&mut self, origin: Resource<HttpOrigin>, path: Option<String>, list: Vec<Header>) -> Answer<Object> {
        let object = self.table.get(&origin)?.0.probe(path.as_deref(), &headers(list))?;
        Ok(Object {
            size: object.size,
            path: object.path,
            etag: object.etag,
        })
    }

    fn read_into(
        &mut self,
        origin: Resource<HttpOrigin>,
        path: String,
        etag: Option<String>,
        list: Vec<Header>,
        dst: Resource<ReadBuf>,
        at: u32,
        count: u32,
        offset: u64,
    ) -> Answer<()> {
        let origin = self.table.get(&origin)?.0.clone();
        let raw = read_target(self, &dst)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table.
        let buf = unsafe { raw.slice_mut(at, count as usize)? };
        Ok(origin.read_into(&path, etag.as_deref(), &headers(list), buf, offset)?)
    }

    fn prefetch(
        &mut self,
        origin: Resource<HttpOrigin>,
        path: String,
        etag: Option<String>,
        list: Vec<Header>,
        count: u64,
        offset: u64,
    ) -> wasmtime::Result<()> {
        let origin = &self.table.get(&origin)?.0;
        origin.prefetch(&path, etag.as_deref(), &headers(list), count, offset);
        Ok(())
    }

    fn send(
        &mut self,
        origin: Resource<HttpOrigin>,
        method: Method,
        path: String,
        list: Vec<Header>,
        body: Vec<u8>,
    ) -> Answer<Response> {
        let method = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        };
        let response = self.table.get(&origin)?.0.send(method, &path, &headers(list), body)?;
        Ok(Response {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: response.body,
        })
    }

    fn drop(&mut self, origin: Resource<HttpOrigin>) -> wasmtime::Result<()> {
        self.table.delete(origin)?;
        Ok(())
    }
}

impl wit_streams::Host for StoreData {
    fn connect(&mut self, key: String, port_key: Option<String>) -> Answer<Resource<NetStream>> {
        let kinds = [ConfigKind::NbdUri, ConfigKind::UnixSocket, ConfigKind::TcpHost];
        let endpoint: Endpoint = match self.net_grant(&key, &kinds) {
            Some(NetGrant::Endpoint(endpoint)) => endpoint.clone(),
            _ => {
                return Err(refused(
                    Errno::Acces,
                    format!("no endpoint was granted for key '{key}'"),
                ))
            }
        };
        let port = match port_key {
            None => None,
            Some(port_key) => match self.net_grant(&port_key, &[ConfigKind::TcpPort]) {
                Some(NetGrant::Port(port)) => Some(*port),
                _ => {
                    return Err(refused(
                        Errno::Acces,
                        format!("no port was granted for key '{port_key}'"),
                    ))
                }
            },
        };
        let stream = endpoint.connect(port)?;
        Ok(self.table.push(NetStream(stream))?)
    }
}

impl HostSocket for StoreData {
    fn send(&mut self, stream: Resource<NetStream>, data: Vec<u8>) -> Answer<()> {
        Ok(self.table.get_mut(&stream)?.0.send(&data)?)
    }

    fn send_from(&mut self, stream: Resource<NetStream>, src: Resource<WriteBuf>, at: u32, count: u32) -> Answer<()> {
        let raw = write_source(self, &src)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table.
        let bytes = unsafe { raw.slice(at, count as usize)? };
        Ok(self.table.get_mut(&stream)?.0.send(bytes)?)
    }

    fn receive(&mut self, stream: Resource<NetStream>, count: u32) -> Answer<Vec<u8>> {
        if count > MAX_RECEIVE {
            return Err(refused(Errno::Inval, format!("receive of {count} bytes is too large")));
        }
        let mut bytes = super::buffers::allocate(count as usize)?;
        let shutdown = self.env.shutdown.clone();
        self.table
            .get_mut(&stream)?
            .0
            .receive(&mut bytes, || shutdown.aborted())?;
        Ok(bytes)
    }

    fn receive_into(&mut self, stream: Resource<NetStream>, dst: Resource<ReadBuf>, at: u32, count: u32) -> Answer<()> {
        let raw = read_target(self, &dst)?;
        // SAFETY: as in `send_from`.
        let buf = unsafe { raw.slice_mut(at, count as usize)? };
        let shutdown = self.env.shutdown.clone();
        Ok(self.table.get_mut(&stream)?.0.receive(buf, || shutdown.aborted())?)
    }

    fn drop(&mut self, stream: Resource<NetStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
