//! Generates the tonic echo service (client and server stubs) from a Rust
//! description with tonic-build's `manual` builder: no .proto file and no
//! `protoc`, so a fresh clone builds with cargo alone. The message is a
//! hand-written prost struct (src/tonic_peer.rs), which is what protoc
//! would have generated for `message Bytes { bytes payload = 1; }`.

fn main() {
    let echo = tonic_build::manual::Method::builder()
        .name("echo")
        .route_name("Echo")
        .input_type("crate::tonic_peer::Payload")
        .output_type("crate::tonic_peer::Payload")
        .codec_path("tonic::codec::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("bench")
        .method(echo)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
