//! What every binary of the platform shares, whatever its role.

pub mod kafka;
pub mod retry;
