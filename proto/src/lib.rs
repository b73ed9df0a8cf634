//! Generated gRPC code for Sluice's three API packages (and the enums they share), and the descriptor set that powers
//! server reflection.

pub mod common {
    pub mod v1 {
        tonic::include_proto!("sluice.common.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("sluice.admin.v1");
        // The enums the admin API shares with the config stream, where they are defined.
        pub use crate::common::v1::{
            BudgetPeriod, Posture, ProviderKeyHealth, ProviderKeyState, ProviderType,
        };
    }
}

pub mod config {
    pub mod v1 {
        tonic::include_proto!("sluice.config.v1");
    }
}

pub mod usage {
    pub mod v1 {
        tonic::include_proto!("sluice.usage.v1");
    }
}

mod redacted_debug;

/// Every Sluice proto as an encoded `FileDescriptorSet`, for gRPC reflection and for tests
/// that enumerate methods.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
