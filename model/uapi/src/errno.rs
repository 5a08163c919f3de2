//! Linux errno values, as the raw gadget interface returns them (x86/generic numbering).

use core::fmt;

/// A Linux errno value (positive). The engine and the controllers speak in these, so a result
/// can be handed to a client unchanged, whatever front-end carries it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:expr, $desc:expr;)*) => {
        impl Errno {
            $(#[doc = $desc] pub const $name: Errno = Errno($val);)*

            /// The symbolic name (`"EINVAL"`), if this is one of the errnos the interface uses.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A short description, as `strerror` would give.
            pub const fn description(self) -> &'static str {
                match self.0 {
                    $($val => $desc,)*
                    _ => "unknown error",
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "Input/output error";
    ENXIO = 6, "No such device or address";
    E2BIG = 7, "Argument list too long";
    EBADF = 9, "Bad file descriptor";
    EAGAIN = 11, "Resource temporarily unavailable";
    ENOMEM = 12, "Cannot allocate memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    ENODEV = 19, "No such device";
    EINVAL = 22, "Invalid argument";
    ENOTTY = 25, "Inappropriate ioctl for device";
    EPIPE = 32, "Broken pipe";
    EDOM = 33, "Numerical argument out of domain";
    ERANGE = 34, "Numerical result out of range";
    ENOSYS = 38, "Function not implemented";
    ENODATA = 61, "No data available";
    ETIME = 62, "Timer expired";
    EPROTO = 71, "Protocol error";
    EOVERFLOW = 75, "Value too large for defined data type";
    EILSEQ = 84, "Invalid or incomplete multibyte or wide character";
    EOPNOTSUPP = 95, "Operation not supported";
    ECONNABORTED = 103, "Software caused connection abort";
    ECONNRESET = 104, "Connection reset by peer";
    ENOTCONN = 107, "Transport endpoint is not connected";
    ESHUTDOWN = 108, "Cannot send after transport endpoint shutdown";
    ETIMEDOUT = 110, "Connection timed out";
    EINPROGRESS = 115, "Operation now in progress";
    EREMOTEIO = 121, "Remote I/O error";
    EXDEV = 18, "Invalid cross-device link";
}

impl Errno {
    /// The raw positive value.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// From a kernel-style negative return (`-EINVAL`) or a positive errno.
    pub const fn from_raw(v: i32) -> Errno {
        Errno(if v < 0 { -v } else { v })
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.description()),
            None => write!(f, "errno {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(Errno::EINVAL.raw(), 22);
        assert_eq!(Errno::ESHUTDOWN.raw(), 108);
        assert_eq!(Errno::from_raw(-71), Errno::EPROTO);
        assert_eq!(Errno::EOVERFLOW.name(), Some("EOVERFLOW"));
        assert_eq!(Errno(9999).name(), None);
    }
}
