//! Reaching Redis the ways an operator's Redis is reached: over TCP with a password, and over
//! TLS (`rediss://`) with a password, the server's certificate checked against the CA in
//! `SSL_CERT_FILE`; a wrong password leaves the pod serving but its registry unavailable, and
//! no password ever reaches a log line.

use tunnel_e2e::backend::Backend;
use tunnel_e2e::cluster::{Balancer, Pod, Redis, RedisOptions};
use tunnel_e2e::TestClient;

use super::{echo, node_of, readiness};

const PASSWORD: &str = "redis-password-5f3a9c";

#[tokio::test]
async fn pods_reach_a_redis_with_a_password_over_tcp_and_over_tls() {
    let options = RedisOptions {
        password: Some(PASSWORD.to_string()),
        tcp: true,
    };
    let Some(redis) = Redis::start_with("redis_password_tls", options).await else {
        return;
    };
    let lb = Balancer::start(Vec::new()).await;
    let public = format!("http://{}", lb.addr);
    let ca = redis.ca_file().display().to_string();
    let tls = [("SSL_CERT_FILE", ca.as_str())];
    // A over TLS, B over plain TCP: one registry.
    let a = Pod::start("a", &redis.tcp_url(true), &public, &tls).await;
    let b = Pod::start("b", &redis.tcp_url(false), &public, &[]).await;
    lb.set(vec![a.addr]);
    let backend = Backend::start("svc").await;
    let client = TestClient::start_at(lb.addr, backend.addr.port(), &[]).await;
    assert_eq!(node_of(&b, &client.tunnel_id).await.as_deref(), Some("a"));
    assert_eq!(echo(&b, &client, "/through-b").await.status(), 200);
    assert_eq!(echo(&a, &client, "/on-a").await.status(), 200);
    for pod in [&a, &b] {
        let (status, ready) = readiness(pod).await;
        assert_eq!((status, &ready["registry"]), (200, &"ok".into()), "{ready}");
    }

    // A wrong password: the pod starts, says its registry is unavailable, and cannot see the
    // tunnel; neither password is logged.
    let wrong = redis.tcp_url(true).replace(PASSWORD, "wrong-password-77e1");
    let c = Pod::start("c", &wrong, &public, &tls).await;
    let (status, ready) = readiness(&c).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["registry"], "unavailable", "{ready}");
    let resp = echo(&c, &client, "/through-c").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-tunnel-error"], "registry_unavailable");
    for pod in [&a, &b, &c] {
        let logs = pod.logs();
        assert!(
            !logs.contains(PASSWORD) && !logs.contains("wrong-password-77e1"),
            "{}: {logs}",
            pod.name
        );
    }
    client.stop().await.unwrap();
}
