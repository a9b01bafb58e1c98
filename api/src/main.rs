//! `vodsource`: one binary, every role.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vodsource_api::cli::main()
}
