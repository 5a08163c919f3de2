//! The crate's error type: small, and it keeps the errno.

use std::io;
use std::path::PathBuf;

use rawgadget_uapi::Errno;

/// What went wrong with a gadget operation.
///
/// Every variant maps to an errno ([`Error::errno`]), and `io::Error::from(err)` carries that same
/// code, so callers who only want `io::Result` lose nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node could not be opened. The message names the file and what to do.
    #[error("cannot open {path}: {source}; {hint}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },

    /// An operation (one of the 16 ioctls, by its `USB_RAW_IOCTL_*` name) failed with an errno.
    #[error("{op} failed: {errno}")]
    Op { op: &'static str, errno: Errno },

    /// A blocking call was interrupted through its [`CancelHandle`](crate::CancelHandle) (EINTR).
    #[error("{op} interrupted")]
    Interrupted { op: &'static str },

    /// The caller asked for something the API refuses before reaching the backend, e.g. a read
    /// on an IN endpoint (EINVAL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The backend returned something that breaks the interface contract, e.g. a CONTROL event
    /// without its 8-byte SETUP packet (EPROTO).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The errno this error stands for.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Open { source, .. } => Errno(source.raw_os_error().unwrap_or(Errno::EIO.0)),
            Error::Op { errno, .. } => *errno,
            Error::Interrupted { .. } => Errno::EINTR,
            Error::InvalidArgument(_) => Errno::EINVAL,
            Error::Protocol(_) => Errno::EPROTO,
        }
    }

    /// Wraps a backend errno, turning EINTR into [`Error::Interrupted`].
    pub(crate) fn op(op: &'static str, errno: Errno) -> Error {
        if errno == Errno::EINTR {
            Error::Interrupted { op }
        } else {
            Error::Op { op, errno }
        }
    }

    /// True for the errno a transfer gets after a bus reset or disconnect (spec §1.5
    /// EP_WRITE/EP_READ): the endpoint's thread should stop and wait for reconfiguration.
    pub fn is_shutdown(&self) -> bool {
        self.errno() == Errno::ESHUTDOWN
    }

    /// True when the call was interrupted through a cancel handle.
    pub fn is_interrupted(&self) -> bool {
        self.errno() == Errno::EINTR
    }
}

impl From<Error> for io::Error {
    /// The same errno as [`Error::errno`] (`raw_os_error` returns it); the message is the
    /// errno's, so log the [`Error`] itself when the context matters.
    fn from(e: Error) -> io::Error {
        io::Error::from_raw_os_error(e.errno().0)
    }
}

/// Result of the gadget API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors keep the errno and convert to io::Error with the same code (style guide, errors).
    #[test]
    fn errno_survives_io_conversion() {
        let e = Error::op("USB_RAW_IOCTL_EP_READ", Errno::ESHUTDOWN);
        assert!(e.is_shutdown());
        let io: io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(Errno::ESHUTDOWN.0));

        let e = Error::op("USB_RAW_IOCTL_EVENT_FETCH", Errno::EINTR);
        assert!(matches!(e, Error::Interrupted { .. }));
        assert_eq!(io::Error::from(e).raw_os_error(), Some(4));

        let e = Error::InvalidArgument("read on an IN endpoint".into());
        assert_eq!(io::Error::from(e).raw_os_error(), Some(Errno::EINVAL.0));
    }

    #[test]
    fn open_error_names_file_and_hint() {
        let e = Error::Open {
            path: "/dev/raw-gadget".into(),
            source: io::Error::from_raw_os_error(2),
            hint: "load raw_gadget",
        };
        let s = e.to_string();
        assert!(
            s.contains("/dev/raw-gadget") && s.contains("load raw_gadget"),
            "{s}"
        );
        assert_eq!(e.errno(), Errno::ENOENT);
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::NotFound);
    }
}
