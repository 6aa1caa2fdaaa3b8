use clap::Parser;

/// jemalloc: bounded RSS under long runs of concurrent requests, where
/// glibc's per-thread arenas kept growing (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Pingora installs ring as the process's provider unless one is
    // installed first; its TLS listener then uses this one.
    #[cfg(feature = "aws-lc-rs")]
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    portcullis::cli::Cli::parse().run()
}
