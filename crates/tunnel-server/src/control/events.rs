//! `GET /api/events` and `GET /api/tunnels/{id}/events`: the calling key's events as
//! server-sent events (`connected`, `disconnected`, `request`, and `lagged` when a slow reader
//! missed some). A stream ends when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

use super::api::ApiKey;
use crate::auth::KeyId;
use crate::error::{ErrorBody, TunnelError};
use crate::observe::events::ServerEvent;
use crate::state::AppState;

/// The events of `owner`'s tunnels (only `tunnel`'s if given), as SSE events.
pub fn event_stream(
    rx: broadcast::Receiver<Arc<ServerEvent>>,
    owner: KeyId,
    tunnel: Option<String>,
) -> impl Stream<Item = Event> {
    futures_util::stream::unfold(rx, move |mut rx| {
        let tunnel = tunnel.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.owner == owner && tunnel.as_ref().is_none_or(|t| *t == e.tunnel) => {
                        let data = serde_json::to_string(&*e).unwrap_or_default();
                        return Some((Event::default().event(e.kind.name()).data(data), rx));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let data = serde_json::json!({ "missed": missed }).to_string();
                        return Some((Event::default().event("lagged").data(data), rx));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}

fn sse(
    state: &AppState,
    stream: impl Stream<Item = Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let shutdown = state.shutdown.clone().cancelled_owned();
    Sse::new(stream.map(Ok).take_until(shutdown)).keep_alive(KeepAlive::default())
}

/// The live events of every tunnel of the calling key.
#[utoipa::path(get, path = "/api/events", tag = "tunnels",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description =
            "Server-sent events: `connected` {tunnel, time, agent, remote}, `disconnected` \
             {tunnel, time, reason}, `request` {tunnel, time, request_id, method, path, status, \
             bytes, ms, outcome} once per proxied request, and `lagged` {missed} when this \
             reader fell more than 4096 events behind and missed some (the proxy never waits \
             for a reader)."),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub(crate) async fn all_events(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.events.subscribe();
    sse(&state, event_stream(rx, owner, None))
}

/// The live events of one tunnel of the calling key (as `GET /api/events`).
#[utoipa::path(get, path = "/api/tunnels/{id}/events", tag = "tunnels",
    params(("id" = String, Path, description = "Tunnel id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description =
            "Server-sent events of this tunnel, as `GET /api/events`"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such tunnel for this key", body = ErrorBody)))]
pub(crate) async fn tunnel_events(
    State(state): State<Arc<AppState>>,
    ApiKey(owner): ApiKey,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, TunnelError> {
    // Subscribed before the lookup: nothing between the two is missed.
    let rx = state.events.subscribe();
    match state.registry.lookup(&id).await? {
        Some(t) if t.owner == owner => Ok(sse(&state, event_stream(rx, owner, Some(id)))),
        _ => Err(TunnelError::TunnelNotFound),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observe::events::{EventBus, EventKind};

    fn request(path: &str) -> EventKind {
        EventKind::Request {
            request_id: "r".into(),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            bytes: 2,
            ms: 1,
            outcome: "ok",
        }
    }

    #[tokio::test]
    async fn a_reader_sees_only_its_keys_tunnels_and_is_told_what_it_missed() {
        let bus = EventBus::with_capacity(4);
        let stream = event_stream(bus.subscribe(), 1, Some("mine".into()));
        tokio::pin!(stream);
        bus.publish(2, "mine", request("/other-key"));
        bus.publish(1, "theirs", request("/other-tunnel"));
        bus.publish(1, "mine", request("/a"));
        let first = format!("{:?}", stream.next().await.unwrap());
        assert!(first.contains("/a") && first.contains("request"), "{first}");
        // Publishing never waits for the reader: ten more than it can hold.
        for i in 0..10 {
            bus.publish(1, "mine", request(&format!("/{i}")));
        }
        let lagged = format!("{:?}", stream.next().await.unwrap());
        assert!(
            lagged.contains("lagged") && lagged.contains("missed"),
            "{lagged}"
        );
        let next = format!("{:?}", stream.next().await.unwrap());
        assert!(next.contains("/6"), "the newest four are kept: {next}");
    }

    #[test]
    fn nothing_is_built_without_a_reader() {
        let bus = EventBus::with_capacity(4);
        assert!(!bus.is_followed());
        bus.publish(1, "t", request("/"));
        let _rx = bus.subscribe();
        assert!(bus.is_followed());
    }
}
