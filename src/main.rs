//! The `clerk-mirror` binary: parses the command line and hands over to the library; it
//! allocates with mimalloc (BENCHMARKS.md: glibc's allocator slowed as the read cache grew).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clerk_mirror::cli::main()
}
