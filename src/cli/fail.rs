//! How a command fails: a message for stderr and an exit code.

use crate::diag::Diagnostics;
use crate::error::chain;

/// A failure that ends the command: a message and an exit code.
pub struct Fail(pub String, pub u8);

impl Fail {
    /// `error: ` and `e` with all its causes ([`chain`]).
    pub fn error(e: &dyn std::error::Error, code: u8) -> Fail {
        Fail(format!("error: {}", chain(e)), code)
    }
}

impl From<Diagnostics> for Fail {
    fn from(d: Diagnostics) -> Self {
        Fail(d.to_string(), 2)
    }
}
