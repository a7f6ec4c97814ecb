//! The `clerk-mirror` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    clerk_mirror::cli::main()
}
