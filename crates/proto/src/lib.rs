//! grove's wire types, generated from `proto/grove.proto`.
//!
//! API boundary: only the edge crates (the NATS bus, later the gRPC service) use these types;
//! everything else works with grove-core's domain types, converted by hand at the edge.

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/grove.v1.rs"));
}
