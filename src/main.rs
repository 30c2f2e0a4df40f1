//! The `kstage` binary: the command line with the built-in topologies registered.

#[path = "../topologies/mod.rs"]
mod topologies;

fn main() -> std::process::ExitCode {
    kstage::cli::main(topologies::registry())
}
