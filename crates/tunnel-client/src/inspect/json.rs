//! Entries as JSON, in the shape of ngrok's agent API (`uri`, `id`, `tunnel_name`,
//! `remote_addr`, `start`, `duration` in nanoseconds, `request`/`response` with `method`,
//! `proto`, `headers` as name → list of values, `uri`, `status`, `status_code`, `raw` in
//! base64) so that its tools work, plus what it lacks: `body` (size, kept bytes, where it was
//! cut), `kind`, `replay_of`, `error`, `messages`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::store::{CapturedBody, Entry, Message, MessageKind, PackedHead};

/// How much of an entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Heads and body sizes (lists and live updates).
    Summary,
    /// With the kept bytes (`raw`, `body.base64`).
    Full,
}

/// `"0000000000000007"`: ids are strings, as in ngrok's API.
pub fn id_string(id: u64) -> String {
    format!("{id:016x}")
}

/// The number behind [`id_string`].
pub fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// `Content-Type` → name → values, names in the usual capitalisation.
fn headers_json(head: &PackedHead) -> Value {
    let mut map = Map::new();
    for field in head.iter() {
        let key = canonical(field.name);
        let v = Value::String(String::from_utf8_lossy(field.value).into_owned());
        match map.get_mut(&key) {
            Some(Value::Array(list)) => list.push(v),
            _ => {
                map.insert(key, Value::Array(vec![v]));
            }
        }
    }
    Value::Object(map)
}

/// `content-type` → `Content-Type`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn raw_head(first_line: &str, head: &PackedHead) -> Vec<u8> {
    let mut raw = Vec::with_capacity(256);
    raw.extend_from_slice(first_line.as_bytes());
    raw.extend_from_slice(b"\r\n");
    for field in head.iter() {
        raw.extend_from_slice(canonical(field.name).as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(field.value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

fn body_json(body: &CapturedBody, head: &PackedHead, detail: Detail) -> Value {
    let mut v = json!({
        "size": body.seen,
        "kept": body.kept,
        "truncated_at": body.truncated_at,
        "complete": body.complete,
        "content_type": head
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    });
    if detail == Detail::Full {
        v["base64"] = Value::String(B64.encode(body.bytes()));
    }
    v
}

fn raw(head: Vec<u8>, body: &CapturedBody, detail: Detail) -> String {
    if detail == Detail::Summary {
        return String::new(); // as ngrok's own list examples: the bytes are in the detail
    }
    let mut raw = head;
    raw.extend_from_slice(&body.bytes());
    B64.encode(raw)
}

/// One entry; `tunnel_name` is the tunnel's id.
pub fn entry_json(e: &Entry, tunnel_name: &str, detail: Detail) -> Value {
    let id = id_string(e.id);
    let req = &e.request;
    let (method, target) = (req.head.method_str(), req.head.target());
    let request = json!({
        "method": method,
        "proto": "HTTP/1.1",
        "headers": headers_json(&req.head),
        "uri": target,
        "raw": raw(
            raw_head(&format!("{method} {target} HTTP/1.1"), &req.head),
            &req.body,
            detail,
        ),
        "body": body_json(&req.body, &req.head, detail),
    });
    let response = e.response.as_ref().map(|r| {
        let code = r.status();
        let status = format!("{} {}", code.as_u16(), code.canonical_reason().unwrap_or(""));
        json!({
            "status": status.trim_end(),
            "status_code": code.as_u16(),
            "proto": "HTTP/1.1",
            "headers": headers_json(&r.head),
            "raw": raw(raw_head(&format!("HTTP/1.1 {}", status.trim_end()), &r.head), &r.body, detail),
            "body": body_json(&r.body, &r.head, detail),
        })
    });
    json!({
        "uri": format!("/api/requests/http/{id}"),
        "id": id,
        "tunnel_name": tunnel_name,
        "remote_addr": e.remote_addr(),
        "start": e.start.to_rfc3339(),
        "duration": e.duration.map_or(0, |d| d.as_nanos() as u64),
        "in_flight": e.duration.is_none(),
        "kind": e.kind,
        "replay_of": e.replay_of.map(id_string),
        "request_id": e.request_id(),
        "error": e.error,
        "request": request,
        "response": response,
        "messages": {
            "uri": format!("/api/requests/http/{id}/messages"),
            "kept": e.messages.len(),
            "dropped": e.messages_dropped,
        },
    })
}

/// One WebSocket message or SSE event: `text` when it is text, `base64` otherwise.
pub fn message_json(m: &Message) -> Value {
    let textual = matches!(m.kind, MessageKind::Text | MessageKind::Event) && !m.compressed;
    let mut v = json!({
        "index": m.index,
        "direction": m.direction,
        "time": m.at.to_rfc3339(),
        "type": m.kind,
        "size": m.size,
        "truncated": m.truncated,
        "compressed": m.compressed,
        "event": m.event,
    });
    match std::str::from_utf8(&m.data) {
        Ok(text) if textual => v["text"] = Value::String(text.to_string()),
        // A cut text message may end inside a character: show what is valid.
        Err(e) if textual && m.truncated && e.error_len().is_none() => {
            v["text"] = Value::String(String::from_utf8_lossy(&m.data[..e.valid_up_to()]).into());
        }
        _ => v["base64"] = Value::String(B64.encode(&m.data)),
    }
    v
}

/// Whether `needle` (lowercase ASCII) occurs in the entry: its method, path, header values,
/// kept bodies or messages, ignoring ASCII case.
pub fn matches(e: &Entry, needle: &[u8]) -> bool {
    let hit = |hay: &[u8]| contains_ignore_case(hay, needle);
    let head = &e.request.head;
    hit(head.method_str().as_bytes())
        || hit(head.target().as_bytes())
        || head.iter().any(|f| hit(f.value))
        || hit(&e.request.body.bytes())
        || e.response
            .as_ref()
            .is_some_and(|r| r.head.iter().any(|f| hit(f.value)) || hit(&r.body.bytes()))
        || e.messages.iter().any(|m| hit(&m.data))
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_capitalised_and_ids_round_trip() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-github-event"), "X-Github-Event");
        assert_eq!(parse_id(&id_string(42)), Some(42));
        assert!(contains_ignore_case(b"{\"Action\":\"OPENED\"}", b"opened"));
        assert!(!contains_ignore_case(b"abc", b"abcd"));
    }
}
