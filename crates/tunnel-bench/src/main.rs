//! `tunnel-bench`: `run` the benchmark (see `bench/run.sh`); serve the `backend` or a `relay`
//! it starts; or send a fixed number of requests (`load`) to a process measured by hand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tunnel_bench::run::RunArgs;

#[derive(Parser)]
#[command(
    name = "tunnel-bench",
    about = "Benchmark the tunnel against a direct connection, rathole and bore"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark; prints a table and writes the JSON figures.
    Run(RunArgs),
    /// Small requests/s and client CPU per request with the traffic inspector on and off.
    Inspect(tunnel_bench::inspect::InspectArgs),
    /// Several pods sharing a Redis registry: requests entering the pod that holds the client
    /// against entering another pod (which forwards), and recovery after `kill -9` of a pod.
    Cluster(tunnel_bench::cluster::ClusterArgs),
    /// Raw TCP through a TCP tunnel (public port, front door) against direct, rathole, bore.
    Tcp(tunnel_bench::tcp::TcpArgs),
    /// Serve the benchmark's local backend on 127.0.0.1:0 (prints `listening ADDR`).
    Backend,
    /// Relay every TCP connection to `--to`, on 127.0.0.1:0 (prints `listening ADDR`).
    Relay {
        /// Where to relay to.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
    /// Send `--requests` GETs of `--path` to `--to` over `--connections` keep-alive
    /// connections, then print how long it took (for counts per request: e.g. callgrind).
    Load {
        /// Where to send them.
        #[arg(long)]
        to: std::net::SocketAddr,
        /// The request target.
        #[arg(long, default_value = "/")]
        path: String,
        /// How many requests.
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 50)]
        connections: usize,
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
        Cmd::Load {
            to,
            path,
            requests,
            connections,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::load::run(to, &path, requests, connections)))
            .map(|done| {
                println!(
                    "{} requests in {:.3} s ({:.0} req/s)",
                    done.requests,
                    done.elapsed.as_secs_f64(),
                    done.requests as f64 / done.elapsed.as_secs_f64().max(1e-9)
                );
            }),
        // Two threads: the service and the measuring side each have one.
        Cmd::Tcp(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::tcp::run(args)))
            .map(|report| println!("{}", report.table())),
        Cmd::Inspect(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::inspect::run(args)))
            .map(|report| println!("{}", report.table())),
        Cmd::Cluster(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(tunnel_bench::cluster::run(args)))
            .map(|report| println!("{}", report.table())),
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
