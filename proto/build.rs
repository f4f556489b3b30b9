//! Compiles `proto/introducer.proto` with the pure-Rust `protox` compiler, so a fresh
//! machine needs only cargo (no system `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "proto/introducer.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = protox::compile([schema], ["proto"])?;
    // Gossip is the largest message by far: boxed, it does not size every Envelope.
    prost_build::Config::new().bytes(["."]).boxed(".introducer.v1.Envelope.kind.gossip").compile_fds(descriptors)?;
    Ok(())
}
