//! A small authoritative DNS server on loopback for the custom-domain tests: answers TXT
//! queries from a table the test changes while it runs (NXDOMAIN for names not in it).
//!
//! Built on hickory-proto's message types, which the server's resolver (hickory-resolver)
//! already brings: a UDP responder of a few lines instead of hickory-server and its
//! zone-file machinery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// TXT records by lowercase name without trailing dot.
type Records = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A running DNS server; dropping it stops it.
pub struct TestDns {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    records: Records,
    task: JoinHandle<()>,
}

impl TestDns {
    /// Starts a server on 127.0.0.1:0.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Records = Arc::default();
        let task = tokio::spawn(serve(socket, records.clone()));
        Self {
            addr,
            records,
            task,
        }
    }

    /// Makes `name`'s TXT records exactly `values` (none: the name does not exist).
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        let mut records = self.records.lock().unwrap();
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if values.is_empty() {
            records.remove(&key);
        } else {
            records.insert(key, values.iter().map(|v| v.to_string()).collect());
        }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, records: Records) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let answer = respond(&query, &records);
        if let Ok(bytes) = answer.to_vec() {
            let _ = socket.send_to(&bytes, peer).await; // a lost answer is retried by the resolver
        }
    }
}

fn respond(query: &Message, records: &Records) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    let Some(q) = query.queries().first() else {
        m.set_response_code(ResponseCode::FormErr);
        return m;
    };
    m.add_query(q.clone());
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let values = records.lock().unwrap().get(&name).cloned();
    match values {
        None => {
            m.set_response_code(ResponseCode::NXDomain);
        }
        Some(values) => {
            m.set_response_code(ResponseCode::NoError);
            if q.query_type() == RecordType::TXT {
                for v in values {
                    // TTL 0: nothing between the test and the server may keep an old answer.
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        0,
                        RData::TXT(TXT::new(vec![v])),
                    ));
                }
            }
        }
    }
    m
}
