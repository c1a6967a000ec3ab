//! Client of the cluster registry (rFaaS's resource manager): managers register and heartbeat
//! their free capacity; clients list nodes to decide where to lease. A registry with a shared
//! secret only answers clients that authenticate ([`RegistryClient::with_secret`]).

use crate::auth::{AuthError, Channel, Secret};
use crate::transport::{TransportError, recv_json, send_json};
use crate::watchdog::Watchdog;
use crate::wire::{AuthService, NodeInfo, NodeStatus, RegistryRequest, RegistryResponse};

use std::time::Duration;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached. The OS error is part of the message (not a
    /// [`source`](std::error::Error::source), so that printing the chain does not repeat it).
    #[error("cannot reach the registry at {address}: {error}")]
    Connect {
        /// Its address.
        address: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The exchange failed (timeout, closed connection, malformed answer).
    #[error("registry exchange failed: {0}")]
    Transport(TransportError),
    /// The registry refused the request.
    #[error("registry refused: {0}")]
    Refused(String),
    /// Authentication failed (secrets differ, one side has none, or a message did not verify).
    #[error("registry authentication: {0}")]
    Auth(AuthError),
    /// The registry answered something that does not fit the request.
    #[error("unexpected registry answer")]
    Unexpected,
    /// The whole exchange, from connecting to the answer, took longer than the client's
    /// timeout ([`RegistryClient::with_timeout`]).
    #[error("the registry did not answer within {0:?}")]
    TimedOut(Duration),
}

impl From<TransportError> for RegistryError {
    fn from(e: TransportError) -> Self {
        RegistryError::Transport(e)
    }
}

/// A handle on a registry at a TCP address; each request is one short connection.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    address: String,
    timeout: Duration,
    secret: Option<Secret>,
}

/// The reason in a registry's plain error answer.
fn registry_refusal(frame: &[u8]) -> Option<String> {
    match serde_json::from_slice(frame).ok()? {
        RegistryResponse::Error(why) => Some(why),
        _ => None,
    }
}

fn auth_error(e: AuthError) -> RegistryError {
    match e {
        AuthError::Transport(t) => RegistryError::Transport(t),
        other => RegistryError::Auth(other),
    }
}

impl RegistryClient {
    /// A client of the registry at `address` (`host:port`), with a 5 s timeout per request
    /// (from looking up the name and connecting to the answer).
    pub fn new(address: impl Into<String>) -> Self {
        RegistryClient {
            address: address.into(),
            timeout: Duration::from_secs(5),
            secret: None,
        }
    }

    /// Authenticates every request with the cluster's shared `secret` (a registry with a
    /// secret refuses clients without it; one without refuses clients with one).
    pub fn with_secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Bounds each request by `timeout` instead of 5 s (zero is taken as 1 ms).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// One request: connect, (authenticate,) ask, read the answer, all within the timeout (a
    /// watchdog shuts the connection down when it passes, however the registry dribbles).
    fn request(&self, req: &RegistryRequest) -> Result<RegistryResponse, RegistryError> {
        let dog = Watchdog::start(self.timeout)?;
        let answer = self.exchange(req, &dog);
        if dog.expired(answer.is_err()) {
            return Err(RegistryError::TimedOut(self.timeout));
        }
        answer
    }

    fn exchange(
        &self,
        req: &RegistryRequest,
        dog: &Watchdog,
    ) -> Result<RegistryResponse, RegistryError> {
        let connect_err = |error| RegistryError::Connect {
            address: self.address.clone(),
            error,
        };
        let mut s = dog.connect_tcp(&self.address).map_err(connect_err)?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(TransportError::Io)?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(TransportError::Io)?;
        let resp = match &self.secret {
            Some(secret) => {
                let mut ch =
                    Channel::connect(&mut s, secret, AuthService::Registry, registry_refusal)
                        .map_err(auth_error)?;
                ch.send_json(&mut s, req).map_err(auth_error)?;
                ch.recv_json(&mut s).map_err(auth_error)?
            }
            None => {
                send_json(&mut s, req)?;
                // Something else listening there (a web server, say) answers with bytes that
                // are no length-prefixed message: say where we looked.
                recv_json(&mut s).map_err(|e| match e {
                    TransportError::Protocol(why) => TransportError::Protocol(format!(
                        "{why}: is {} an rfaas registry?",
                        self.address
                    )),
                    e => e,
                })?
            }
        };
        match resp {
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

    /// Reports the free capacity of `node` (as registered: its id and address); keeps it
    /// listed.
    pub fn heartbeat(
        &self,
        node: &NodeInfo,
        free_cores: u32,
        free_memory_mib: u64,
    ) -> Result<(), RegistryError> {
        self.expect_ok(&RegistryRequest::Heartbeat {
            id: node.id.clone(),
            address: Some(node.address.clone()),
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
