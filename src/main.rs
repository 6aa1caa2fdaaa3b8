use clap::Parser;

/// jemalloc: bounded RSS under long runs of concurrent requests, where
/// glibc's per-thread arenas kept growing (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::Cli::parse().run()
}
