//! What every source that speaks HTTP shares: the client settings
//! ([`config`]), the connector whose connections each hold a slot
//! ([`transport`]), and the per-server slots ([`slots`]) that bound how many
//! connections and requests all sources together have open to one server.

pub mod config;
pub mod slots;
pub mod transport;
