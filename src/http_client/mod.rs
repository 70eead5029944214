//! What every source that speaks HTTP shares: the client settings
//! ([`config`]), the connector whose connections each hold a slot
//! ([`transport`]), and the per-server slots ([`slots`]) that bound how many
//! connections and requests all sources together have open to one server.

pub mod client;
pub mod config;
pub mod slots;
pub mod transport;

/// Default of `limits.max_input_size`: the most bytes one answer may have.
pub const DEFAULT_MAX_INPUT: usize = 64 << 20;

#[cfg(test)]
mod handover_test;
