//! `vodsource`: one binary, every role.

fn main() -> std::process::ExitCode {
    vodsource_api::cli::main()
}
