//! The text services: line protocols that `nc` and `telnet` can talk to.

pub mod broadcast;
pub mod echo;
pub mod line_client;
pub mod line_server;
pub mod reply;
pub mod time;

#[cfg(test)]
pub(crate) mod fixture;

use bytes::Bytes;
use std::fmt::Display;

/// The line a service sends before it closes a connection for a reason:
/// `error: <reason>\n`. Every service uses this one format, so clients and scripts can
/// recognise an error by its prefix.
pub fn error_line(reason: impl Display) -> Bytes {
    Bytes::from(format!("error: {reason}\n"))
}
