//! How a command fails: a message for stderr and an exit code.

use crate::diag::Diagnostics;

/// A failure that ends the command: a message and an exit code.
pub struct Fail(pub String, pub u8);

impl From<Diagnostics> for Fail {
    fn from(d: Diagnostics) -> Self {
        Fail(d.to_string(), 2)
    }
}
