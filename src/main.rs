//! The `tokend` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tokend::cli::main()
}
