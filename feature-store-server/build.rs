//! Compiles Feast's own `.proto` files (vendored under `proto/`, Apache-2.0,
//! from Feast 0.67) with protox, a protobuf compiler in pure Rust, so no
//! `protoc` is needed on the build machine.
fn main() {
    let protos = ["proto/feast/serving/ServingService.proto", "proto/feast/types/Value.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("Feast's .proto files compile");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    std::fs::write(out.join("feast_descriptor.bin"), prost::Message::encode_to_vec(&fds))
        .expect("writing the descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generating the Feast gRPC code");
}
