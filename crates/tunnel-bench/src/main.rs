//! `tunnel-bench`: `run` the benchmark (see `bench/run.sh`), or serve the `backend` it starts.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tunnel_bench::run::RunArgs;

#[derive(Parser)]
#[command(
    name = "tunnel-bench",
    about = "Benchmark the tunnel against a direct connection"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark; prints a table and writes the JSON figures.
    Run(RunArgs),
    /// Serve the benchmark's local backend on 127.0.0.1:0 (prints `listening ADDR`).
    Backend,
    /// Relay every TCP connection to `--to`, on 127.0.0.1:0 (prints `listening ADDR`).
    Relay {
        /// Where to relay to.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Backend => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::backend::main())),
        Cmd::Relay { to } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::relay::main(to))),
        Cmd::Run(args) => {
            let out = args.out.clone();
            // One thread: the measuring process should take as little CPU from the processes
            // it measures as it can.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(tunnel_bench::run::run(args)))
                .and_then(|report| {
                    println!("{}", report.table());
                    for n in &report.notes {
                        println!("- {n}");
                    }
                    report.write_json(&out)?;
                    println!("\nfigures written to {}", out.display());
                    Ok(())
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
