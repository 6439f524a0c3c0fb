//! One connection to the local service with the bytes read from it but not used yet, and the
//! idle list connections wait in between requests.

use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle connections kept at most (hyper-util's client kept 64 per host too).
pub(super) const MAX_IDLE: usize = 64;

/// Read buffer a new connection starts with: a small response fits in one read.
const READ_BUF: usize = 8 * 1024;

/// A connection and what was read from it past the last message used.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
        }
    }

    /// Whether the connection still looks open and quiet. An idle connection the local
    /// service closed has its end of stream waiting: the runtime saw it become readable, so
    /// `try_read` finds it (and costs no system call while nothing arrived). Bytes it sent
    /// unasked belong to no request: such a connection is not used either.
    fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Connections that answered their last request whole and may take the next one.
#[derive(Debug, Default)]
pub(super) struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// The most recently used idle connection that still looks open.
    pub(super) fn take(&self) -> Option<Conn> {
        // A panic while holding this lock left a list of connections, nothing half-changed.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if conn.looks_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for a later request, unless [`MAX_IDLE`] wait already.
    pub(super) fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Number of idle connections (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
