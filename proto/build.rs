//! Compiles the protos with protox (pure Rust), so no `protoc` is needed anywhere.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "sluice/common/v1/common.proto",
    "sluice/admin/v1/admin.proto",
    "sluice/config/v1/config.proto",
    "sluice/usage/v1/usage.proto",
];

/// Messages with a secret field: their `Debug` is written by hand in `src/redacted_debug.rs`.
const SECRET_CARRYING: &[&str] = &[
    "sluice.admin.v1.CreateProviderKeyRequest",
    "sluice.admin.v1.RotateProviderKeyRequest",
    "sluice.admin.v1.CreateVirtualKeyResponse",
    "sluice.admin.v1.CreateAdminTokenResponse",
    "sluice.config.v1.ProviderKeyConfig",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=sluice");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("sluice_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .skip_debug(SECRET_CARRYING.iter().map(|name| format!(".{name}")))
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
