//! How operating-system errors become the machine's [`NetError`].

use std::io;
use switchyard_core::NetError;

/// Maps an I/O error from a socket to the reason a machine is given.
///
/// Refused, reset (including a broken pipe or an aborted connection), timed out and
/// unreachable get their own variants; anything else keeps the OS's description in
/// [`NetError::Other`].
pub fn net_error(error: &io::Error) -> NetError {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => NetError::Refused,
        ConnectionReset | ConnectionAborted | BrokenPipe => NetError::Reset,
        TimedOut => NetError::TimedOut,
        _ if is_unreachable(error) => NetError::Unreachable,
        _ => NetError::Other(error.to_string()),
    }
}

/// A short, lower-case description of an I/O error for one-line messages:
/// "address already in use" rather than "Address already in use (os error 98)".
pub fn describe(error: &io::Error) -> String {
    use io::ErrorKind::*;
    let text = match error.kind() {
        AddrInUse => "address already in use",
        AddrNotAvailable => "address not available",
        PermissionDenied => "permission denied",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        TimedOut => "timed out",
        _ if is_unreachable(error) => "network unreachable",
        _ => return error.to_string(),
    };
    text.to_string()
}

// `ErrorKind::{NetworkUnreachable, HostUnreachable, NetworkDown}` need Rust 1.83; the
// workspace supports 1.80, so look at the OS error code instead.
#[cfg(unix)]
fn is_unreachable(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN))
}

#[cfg(not(unix))]
fn is_unreachable(_error: &io::Error) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_common_kinds() {
        assert_eq!(net_error(&io::ErrorKind::ConnectionRefused.into()), NetError::Refused);
        assert_eq!(net_error(&io::ErrorKind::BrokenPipe.into()), NetError::Reset);
        assert_eq!(net_error(&io::ErrorKind::TimedOut.into()), NetError::TimedOut);
        #[cfg(unix)]
        assert_eq!(net_error(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)), NetError::Unreachable);
        assert!(matches!(net_error(&io::Error::other("boom")), NetError::Other(m) if m == "boom"));
        assert_eq!(describe(&io::Error::from(io::ErrorKind::AddrInUse)), "address already in use");
    }
}
