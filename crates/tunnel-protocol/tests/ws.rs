//! Our WebSocket framing ([`tunnel_protocol::ws`]) through its public API: frames round-trip
//! both ways, fragments are joined, bad sequences are errors, and it interoperates with
//! another implementation (tungstenite) in both roles. The header parser and the buffer
//! release are tested next to the code (they need private parts).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Role as TRole;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::frame::FLAG_END;
use tunnel_protocol::ws::{apply_mask, CloseFrame, Message, Reader, Role, WebSocket, WsError};

#[test]
fn mask_is_its_own_inverse_at_every_length() {
    let key = [0x12, 0x34, 0x56, 0x78];
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut masked = data.clone();
        apply_mask(&mut masked, key);
        for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
            assert_eq!(*m, d ^ key[i % 4], "len {len} byte {i}");
        }
        apply_mask(&mut masked, key);
        assert_eq!(masked, data);
    }
}

async fn pair(
    max: usize,
) -> (
    WebSocket<tokio::io::DuplexStream>,
    WebSocket<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (
        WebSocket::new(a, Role::Client, max),
        WebSocket::new(b, Role::Server, max),
    )
}

#[tokio::test]
async fn frames_round_trip_both_ways() {
    let (mut client, mut server) = pair(1 << 20).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    client.writer.text("{\"a\":1}");
    client.writer.data(7, true, &big[..70_000]);
    client.writer.binary(&[]);
    client.writer.ping(b"p");
    client.writer.flush().await.expect("written");
    let next = |m: Option<Result<Message, WsError>>| m.expect("open").expect("valid");
    assert_eq!(
        next(server.reader.next().await),
        Message::Text(Bytes::from_static(b"{\"a\":1}"))
    );
    match next(server.reader.next().await) {
        Message::Binary(b) => {
            assert_eq!(&b[..5], &[0, 0, 0, 7, FLAG_END]);
            assert_eq!(&b[5..], &big[..70_000]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(server.reader.next().await),
        Message::Binary(Bytes::new())
    );
    assert_eq!(
        next(server.reader.next().await),
        Message::Ping(Bytes::from_static(b"p"))
    );
    server.writer.binary(&big);
    server.writer.close(1000, "bye");
    server.writer.flush().await.expect("written");
    assert_eq!(
        next(client.reader.next().await),
        Message::Binary(Bytes::from(big))
    );
    assert_eq!(
        next(client.reader.next().await),
        Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "bye".into()
        }))
    );
    drop(server);
    assert!(
        client.reader.next().await.is_none(),
        "clean end between messages"
    );
}

#[tokio::test]
async fn fragments_are_joined_and_limits_enforced() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut reader = Reader::new(a, Role::Client, 10);
    // "Hel" + ping + "lo" as a fragmented text message, from a server (unmasked).
    b.write_all(&[
        0x01, 3, b'H', b'e', b'l', 0x89, 1, b'x', 0x80, 2, b'l', b'o',
    ])
    .await
    .expect("written");
    assert_eq!(
        reader.next().await.expect("open").expect("valid"),
        Message::Ping(Bytes::from_static(b"x"))
    );
    assert_eq!(
        reader.next().await.expect("open").expect("valid"),
        Message::Text(Bytes::from_static(b"Hello"))
    );
    // 6 + 6 bytes in fragments exceeds the limit of 10.
    b.write_all(&[0x02, 6, 1, 2, 3, 4, 5, 6, 0x80, 6, 1, 2, 3, 4, 5, 6])
        .await
        .expect("written");
    assert!(matches!(
        reader.next().await,
        Some(Err(WsError::TooLarge { len: 12, max: 10 }))
    ));
}

#[tokio::test]
async fn bad_sequences_are_errors() {
    for bytes in [
        &[0x80u8, 0][..],              // continuation without a message
        &[0x01, 1, b'a', 0x81, 0][..], // new message inside a fragmented one
        &[0x81, 2, 0xff, 0xfe][..],    // text that is not UTF-8
        &[0x88, 1, 3][..],             // 1-byte close payload
        &[0x81, 5, b'a'][..],          // EOF mid-frame
    ] {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut reader = Reader::new(a, Role::Client, 100);
        b.write_all(bytes).await.expect("written");
        drop(b);
        let mut result = reader.next().await;
        if matches!(result, Some(Ok(_))) {
            result = reader.next().await;
        }
        assert!(matches!(result, Some(Err(_))), "{bytes:?}: {result:?}");
    }
}

#[tokio::test]
async fn ours_and_tungstenite_understand_each_other() {
    for our_role in [Role::Client, Role::Server] {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut ours = WebSocket::new(a, our_role, 1 << 20);
        let their_role = match our_role {
            Role::Client => TRole::Server,
            Role::Server => TRole::Client,
        };
        let mut theirs = WebSocketStream::from_raw_socket(b, their_role, None).await;
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        ours.writer.text("héllo");
        ours.writer.data(1, false, &big);
        ours.writer.ping(b"12345678");
        ours.writer.flush().await.expect("written");
        let m = theirs.next().await.expect("open").expect("valid");
        assert_eq!(m, TMessage::text("héllo"));
        let m = theirs.next().await.expect("open").expect("valid");
        assert_eq!(m.into_data().len(), 100_005);
        let m = theirs.next().await.expect("open").expect("valid");
        assert_eq!(m, TMessage::Ping(Bytes::from_static(b"12345678")));
        theirs
            .send(TMessage::binary(big.clone()))
            .await
            .expect("sent");
        theirs.send(TMessage::text("ok")).await.expect("sent");
        // tungstenite answered our ping: `recv` skips the pong.
        assert_eq!(
            ours.recv().await.expect("open").expect("valid"),
            Message::Binary(Bytes::from(big))
        );
        assert_eq!(
            ours.recv().await.expect("open").expect("valid"),
            Message::Text(Bytes::from_static(b"ok"))
        );
        ours.close(1000, "done").await;
        match theirs.next().await {
            Some(Ok(TMessage::Close(Some(f)))) => assert_eq!(f.reason.as_str(), "done"),
            other => panic!("{our_role:?}: {other:?}"),
        }
    }
}
