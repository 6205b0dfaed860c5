//! The gRPC APIs of the ModelOps result services, generated from `proto/modelops/*/v1`.
//!
//! Each package is a module: [`registry::v1`], [`attribution::v1`], [`indexer::v1`]. The query
//! service speaks Arrow Flight; its command JSON is documented in
//! `proto/modelops/query/v1/FLIGHT_COMMANDS.md`. [`FILE_DESCRIPTOR_SET`] serves reflection.

pub use prost;
pub use tonic;

/// The encoded `FileDescriptorSet` of every package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// `modelops.registry.*`.
pub mod registry {
    /// `modelops.registry.v1`: job state, progress, specs, watch and claims.
    pub mod v1 {
        #![expect(missing_docs, clippy::all, reason = "generated code")]
        #![allow(clippy::clone_on_ref_ptr, reason = "generated code")]
        tonic::include_proto!("modelops.registry.v1");
    }
}

/// `modelops.attribution.*`.
pub mod attribution {
    /// `modelops.attribution.v1`: job ↔ result edges.
    pub mod v1 {
        #![expect(missing_docs, clippy::all, reason = "generated code")]
        #![allow(clippy::clone_on_ref_ptr, reason = "generated code")]
        tonic::include_proto!("modelops.attribution.v1");
    }
}

/// `modelops.indexer.*`.
pub mod indexer {
    /// `modelops.indexer.v1`: building loss tables.
    pub mod v1 {
        #![expect(missing_docs, clippy::all, reason = "generated code")]
        #![allow(clippy::clone_on_ref_ptr, reason = "generated code")]
        tonic::include_proto!("modelops.indexer.v1");
    }
}

/// The subset of etcd v3's API the registry's etcd backend speaks (`proto/etcd/`).
pub mod etcd {
    /// `etcdserverpb`: the KV and Watch services, and the Auth service's `Authenticate`.
    pub mod etcdserverpb {
        #![expect(missing_docs, clippy::all, reason = "generated code")]
        #![allow(clippy::clone_on_ref_ptr, reason = "generated code")]
        tonic::include_proto!("etcdserverpb");
    }

    /// `mvccpb`: keys, values and events.
    pub mod mvccpb {
        #![expect(missing_docs, clippy::all, reason = "generated code")]
        #![allow(clippy::clone_on_ref_ptr, reason = "generated code")]
        tonic::include_proto!("mvccpb");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        for expected in [
            "modelops.registry.v1.JobRegistry",
            "modelops.attribution.v1.Attribution",
            "modelops.indexer.v1.Indexer",
            "arrow.flight.protocol.FlightService",
        ] {
            assert!(services.iter().any(|s| s == expected), "{expected} missing from {services:?}");
        }
    }
}
