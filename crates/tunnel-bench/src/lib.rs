//! The benchmark of issues 5 and 14: our tunnel against the same backend reached directly and
//! through the tunnels users would pick instead (rathole, bore), with two raw TCP relays as the
//! floor of any two-process tunnel.
//!
//! Everything runs on one machine, on loopback, bounded in time. Every figure is taken for
//! every path in the same run, in interleaved rounds whose order rotates, and reported with its
//! spread over the rounds and as ratios to direct and to rathole, so that the load generator,
//! the backend and the tunnels sharing the same cores cancels out as far as it can.
//!
//! # Layout
//! - [`backend`]: the bench backend (small response, large streamed body, uploads);
//!   [`nginx`]: nginx from a generated configuration, the backend a user would have.
//! - [`peers`]: rathole and bore; [`relay`]: the raw TCP relay.
//! - [`client`]: bulk transfers, fresh connections, a rate-limited reader; [`load`]: a fixed
//!   number of requests; [`wrk`]: runs `wrk` and parses its report.
//! - [`procs`]: child processes, readiness by polling with a deadline, RSS, CPU and context
//!   switches from `/proc`; [`perf`]: syscall and `malloc` counts with `perf stat`.
//! - [`idle`]: many idle tunnels, each a real WebSocket that speaks the protocol.
//! - [`paths`]: the paths and backends measured; [`stats`]: medians and spreads.
//! - [`machine`]: the CPU, load and environment a run had, recorded with its figures.
//! - [`inspect`]: `tunnel-bench inspect`, the client's traffic inspector on against off.
//! - [`cluster`]: `tunnel-bench cluster`, several pods sharing Redis: a request entering the
//!   pod that holds the client against one entering another pod, and recovery after `kill -9`.
//! - [`tcp`]: `tunnel-bench tcp`, raw TCP through a TCP tunnel both ways in, against direct,
//!   rathole and bore.
//! - [`setup`]: starts every process and knows the routes; [`run`]: the phases;
//!   [`report`]: the figures, the tables and the JSON file.

pub mod backend;
pub mod client;
pub mod cluster;
pub mod idle;
pub mod inspect;
pub mod load;
pub mod machine;
pub mod nginx;
pub mod paths;
pub mod peers;
pub mod perf;
pub mod procs;
pub mod relay;
pub mod report;
pub mod run;
pub mod setup;
pub mod stats;
pub mod tcp;
pub mod wrk;
