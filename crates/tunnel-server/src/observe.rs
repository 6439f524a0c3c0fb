//! Observability: what the server tells its operators.
//!
//! - [`metrics`]: the Prometheus families and the calls that bump them (types only).
//! - [`metrics_server`]: the listener that serves them, apart from the public one.
//! - [`logging`]: log format and time zone; [`log_writer`]: lines written in batches by a
//!   background thread; [`line_text`]: the access line, written into that buffer directly.
//! - [`events`]: the live event stream of connects, disconnects and requests (bounded,
//!   never waited for).
//! - [`request_id`]: the id that ties one request's log lines together, on the server and in
//!   `tunnel-client`.
//!
//! Observation sits above the tunnel registry (the gauges are sampled from it, and the
//! registry tells the metrics of every tunnel through [`crate::tunnel::registry::RegistryEvents`])
//! and below everything that serves requests.

pub mod events;
pub mod line_text;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod request_id;
