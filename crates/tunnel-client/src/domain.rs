//! What the banner adds: the tunnel's other URLs (the subdomain and the path-prefix form both
//! work; the banner's is the one the server's TUNNEL_URL_STYLE picks), and for a custom domain
//! the TXT record to create, watched until the server has verified it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{ApiError, ControlClient, Created, CustomDomain};
use crate::display::Printer;

/// How often the server is asked to look at the TXT record again, until it is verified.
const VERIFY_EVERY: Duration = Duration::from_secs(5);

/// Prints the URLs besides `shown`, and what a custom domain still needs.
pub fn announce(printer: &Printer, created: &Created, shown: &str) {
    for url in created.other_urls(shown) {
        printer.info(&format!("also at {url}"));
    }
    if let Some(d) = &created.custom_domain {
        if d.verified {
            printer.info(&format!("custom domain verified: {}", d.url));
        } else {
            printer.info(&waiting(d));
        }
    }
}

fn waiting(d: &CustomDomain) -> String {
    format!(
        "custom domain {} answers once DNS has a TXT record {} with the value \"{}\" (and the \
         domain points at the server); waiting for it",
        d.domain, d.txt_name, d.txt_value
    )
}

/// Asks the server to verify the custom domain every few seconds until it is, then says so.
/// Runs beside the session, on `tasks`; ends at shutdown, once verified, or when the server
/// refuses.
pub fn watch(
    api: &ControlClient,
    created: &Created,
    printer: &Printer,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    let Some(first) = created.custom_domain.as_ref().filter(|d| !d.verified) else {
        return;
    };
    let (api, id, printer, shutdown) = (
        api.clone(),
        created.tunnel_id.clone(),
        printer.clone(),
        shutdown.clone(),
    );
    let mut last = first.status.clone();
    tasks.spawn(async move {
        loop {
            match api.verify_domain(&id).await {
                Ok(d) if d.verified => {
                    printer.info(&format!("custom domain verified: {}", d.url));
                    return;
                }
                Ok(d) => {
                    if d.status != last && d.status != "pending" {
                        printer.warn(&format!("custom domain {}: {}", d.domain, d.status));
                        last = d.status;
                    }
                }
                Err(ApiError::Unreachable { .. }) => {}
                Err(e) => {
                    printer.warn(&format!("custom domain not verified: {e}"));
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(VERIFY_EVERY) => {}
            }
        }
    });
}
