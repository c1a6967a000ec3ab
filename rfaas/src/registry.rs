//! Client of the cluster registry (rFaaS's resource manager): managers register and heartbeat
//! their free capacity; clients list nodes to decide where to lease.

use crate::transport::{TransportError, recv_json, send_json};
use crate::wire::{NodeInfo, NodeStatus, RegistryRequest, RegistryResponse};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("cannot reach the registry at {address}")]
    Connect {
        /// Its address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed (timeout, closed connection, malformed answer).
    #[error("registry exchange failed")]
    Transport(#[from] TransportError),
    /// The registry refused the request.
    #[error("registry refused: {0}")]
    Refused(String),
    /// The registry answered something that does not fit the request.
    #[error("unexpected registry answer")]
    Unexpected,
}

/// A handle on a registry at a TCP address; each request is one short connection.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    address: String,
    timeout: Duration,
}

impl RegistryClient {
    /// A client of the registry at `address` (`host:port`), with a 5 s timeout per request.
    pub fn new(address: impl Into<String>) -> Self {
        RegistryClient {
            address: address.into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn request(&self, req: &RegistryRequest) -> Result<RegistryResponse, RegistryError> {
        let connect_err = |source| RegistryError::Connect {
            address: self.address.clone(),
            source,
        };
        let addr = self
            .address
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| RegistryError::Connect {
                address: self.address.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let mut s = TcpStream::connect_timeout(&addr, self.timeout).map_err(connect_err)?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(TransportError::Io)?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(TransportError::Io)?;
        send_json(&mut s, req)?;
        match recv_json(&mut s)? {
            RegistryResponse::Error(e) => Err(RegistryError::Refused(e)),
            other => Ok(other),
        }
    }

    fn expect_ok(&self, req: &RegistryRequest) -> Result<(), RegistryError> {
        match self.request(req)? {
            RegistryResponse::Ok => Ok(()),
            _ => Err(RegistryError::Unexpected),
        }
    }

    /// Registers (or re-registers) a node.
    pub fn register(&self, node: &NodeInfo) -> Result<(), RegistryError> {
        self.expect_ok(&RegistryRequest::Register(node.clone()))
    }

    /// Reports a node's free capacity; keeps it listed.
    pub fn heartbeat(
        &self,
        id: &str,
        free_cores: u32,
        free_memory_mib: u64,
    ) -> Result<(), RegistryError> {
        self.expect_ok(&RegistryRequest::Heartbeat {
            id: id.to_owned(),
            free_cores,
            free_memory_mib,
        })
    }

    /// Removes a node.
    pub fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        self.expect_ok(&RegistryRequest::Deregister { id: id.to_owned() })
    }

    /// The live nodes, most free cores first.
    pub fn list(&self) -> Result<Vec<NodeStatus>, RegistryError> {
        match self.request(&RegistryRequest::List)? {
            RegistryResponse::Nodes(n) => Ok(n),
            _ => Err(RegistryError::Unexpected),
        }
    }
}
