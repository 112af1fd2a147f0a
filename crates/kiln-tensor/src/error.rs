//! The one error type of kiln: every fallible operation returns [`Result`].

/// An error from a kiln operation. The message names the op and the shapes involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An op was given arguments it cannot work with (shapes, dims, dtypes, attributes).
    #[error("{op}: {msg}")]
    Op {
        /// The op, as PyTorch names it (`matmul`, `add`, ...).
        op: &'static str,
        /// What is wrong, with the shapes and the offending dim.
        msg: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file or other input is malformed.
    #[error("{what}: {msg}")]
    Format {
        /// The file or input that is malformed.
        what: String,
        /// What is wrong with it.
        msg: String,
    },
    /// Any other error, with its message.
    #[error("{0}")]
    Msg(String),
}

/// `Result` with kiln's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Op`] for `op` with the given message.
    pub fn op(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Op { op, msg: msg.into() }
    }
}

/// Returns early with an [`Error::Op`]: `bail!("matmul", "cannot multiply {:?} by {:?}", a, b)`.
#[macro_export]
macro_rules! bail {
    ($op:expr, $($arg:tt)*) => {
        return Err($crate::Error::op($op, format!($($arg)*)))
    };
}
