//! Compiles the `.proto` files with protox (pure Rust), so no system `protoc`
//! is needed on a developer machine or in CI.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = [
        "d2c/common/v1/common.proto",
        "d2c/orders/v1/orders.proto",
        "d2c/inventory/v1/inventory.proto",
        "d2c/payments/v1/payments.proto",
        "d2c/catalog/v1/catalog.proto",
        "d2c/customers/v1/customers.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(files, [&root])?;
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(descriptors)?;
    Ok(())
}
