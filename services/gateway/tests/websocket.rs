//! The WebSocket endpoint in process, with the chain feed driven by the test: a client that
//! stops reading is cut off with close code 1008 and a reason, not buffered without bound; the
//! connection and subscription caps answer with JSON-RPC errors; one address cannot take every
//! connection, and a connection that subscribes to nothing and says nothing is closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use alloy_primitives::{Signature, U256};
use clap::Parser as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use verity_gateway::{Backends, Config, feed::FeedEvent, router};
use verity_primitives::{Block, Header};

/// A gateway router on a run-time loopback port; its backends are never reached.
async fn serve(args: &[&str]) -> (String, Backends) {
    // A fixed sequencer URL: following the lease would need a genesis to check it against.
    let mut argv = vec!["verity-gateway", "--sequencer-url=http://127.0.0.1:1"];
    argv.extend_from_slice(args);
    let config = Config::parse_from(argv);
    let backends = Backends::new(&config, 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let app =
        router(backends.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, backends)
}

fn block(number: u64) -> FeedEvent {
    let header = Header {
        number,
        gas_limit: 30_000_000,
        base_fee_per_gas: Some(7),
        // Padding makes each notification about 1 KiB, so buffers fill sooner.
        extra_data: vec![0xab; 512].into(),
        ..Default::default()
    };
    FeedEvent::Block {
        block: Arc::new(Block {
            hash: header.hash_slow(),
            header,
            first_mini_block: number,
            mini_block_count: 1,
            transaction_hashes: Vec::new(),
            signature: Signature::new(U256::from(1), U256::from(1), false),
        }),
        receipts: Arc::new(Vec::new()),
    }
}

async fn request(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    body: Value,
) -> Value {
    socket
        .send(Message::Text(body.to_string().into()))
        .await
        .unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_with_a_reason() {
    let (url, backends) = serve(&["--ws-queue", "16"]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let reply = request(
        &mut socket,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}),
    )
    .await;
    assert!(reply["result"].is_string(), "{reply}");
    // Publish far more than the queue and the socket buffers hold, paced so the subscription
    // keeps up with the feed: the backlog builds up in front of the client, which reads nothing.
    for round in 0..200u64 {
        for i in 0..500 {
            backends.feed.publish(block(round * 500 + i));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut notifications = 0u64;
    let frame = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => notifications += 1,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    let frame = frame.expect("a close frame with a reason");
    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
    assert!(frame.reason.contains("too slow"), "{frame:?}");
    assert!(
        notifications < 100_000,
        "the backlog was cut off, not delivered: {notifications}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_queue_reaches_a_client_that_reads() {
    let (url, backends) = serve(&["--ws-queue", "16"]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let reply = request(
        &mut socket,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}),
    )
    .await;
    assert!(reply["result"].is_string(), "{reply}");
    for number in 0..2_000 {
        backends.feed.publish(block(number));
    }
    let mut numbers = Vec::new();
    while numbers.len() < 2_000 {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                numbers.push(value["params"]["result"]["number"].clone());
            }
            other => panic!("after {} notifications: {other:?}", numbers.len()),
        }
    }
    let expected: Vec<Value> = (0..2_000u64).map(|n| json!(format!("{n:#x}"))).collect();
    assert_eq!(numbers, expected, "every head, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_subscription_caps_answer_with_errors() {
    let (url, _backends) = serve(&[
        "--max-ws-connections",
        "1",
        "--max-subscriptions-per-connection",
        "2",
    ])
    .await;
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut ids = Vec::new();
    for id in 0..2 {
        let reply = request(
            &mut first,
            json!({"jsonrpc": "2.0", "id": id, "method": "eth_subscribe", "params": ["newHeads"]}),
        )
        .await;
        assert!(reply["result"].is_string(), "{reply}");
        ids.push(reply["result"].clone());
    }
    let refused = request(
        &mut first,
        json!({"jsonrpc": "2.0", "id": 9, "method": "eth_subscribe", "params": ["miniBlocks"]}),
    )
    .await;
    assert_eq!(refused["error"]["code"], json!(-32005), "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many subscriptions"),
        "{refused}"
    );
    let id = request(
        &mut first,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["stateChanges", []]}),
    )
    .await;
    assert_eq!(
        id["error"]["code"],
        json!(-32005),
        "the cap comes first: {id}"
    );

    // A second connection is over the cap: an error, then a close saying why.
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (error, close) = until_closed(&mut second).await;
    let error = error.expect("a JSON-RPC error before the close");
    assert_eq!(error["error"]["code"], json!(-32005), "{error}");
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Again);
    assert!(close.reason.contains("too many WebSocket connections"));

    // Unsubscribing frees a slot on the first connection.
    let removed = request(
        &mut first,
        json!({"jsonrpc": "2.0", "id": 4, "method": "eth_unsubscribe", "params": [ids[0]]}),
    )
    .await;
    assert_eq!(removed["result"], json!(true), "{removed}");
    let subscribed = request(
        &mut first,
        json!({"jsonrpc": "2.0", "id": 5, "method": "eth_subscribe", "params": ["newHeads"]}),
    )
    .await;
    assert!(subscribed["result"].is_string(), "{subscribed}");
}

/// The JSON-RPC error (if any) and the close frame a refused or closed connection gets.
async fn until_closed(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (
    Option<Value>,
    Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) {
    let mut error = None;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        match message {
            Message::Text(text) => error = Some(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Close(frame) => return (error, frame),
            _ => {}
        }
    }
    (error, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let (url, _backends) = serve(&["--max-ws-connections-per-ip", "2"]).await;
    let (_first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut third, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (error, close) = until_closed(&mut third).await;
    let error = error.expect("a JSON-RPC error before the close");
    assert_eq!(error["error"]["code"], json!(-32005), "{error}");
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Again);
    assert!(
        close
            .reason
            .contains("from 127.0.0.1 (limit 2 per address)"),
        "{close:?}"
    );
    // A connection that ends frees its address's slot.
    second.close(None).await.unwrap();
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut again, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let reply = request(
        &mut again,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}),
    )
    .await;
    assert!(reply["result"].is_string(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_without_subscriptions_is_closed() {
    let (url, _backends) = serve(&["--ws-idle-secs", "1"]).await;
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut subscribed, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let reply = request(
        &mut subscribed,
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}),
    )
    .await;
    assert!(reply["result"].is_string(), "{reply}");
    let started = std::time::Instant::now();
    let (_, close) = until_closed(&mut silent).await;
    let close = close.expect("closed");
    assert_eq!(close.code, CloseCode::Away);
    assert!(close.reason.contains("idle for 1 s"), "{close:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The subscriber stays: it still answers after twice the idle time.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let reply = request(
        &mut subscribed,
        json!({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["miniBlocks"]}),
    )
    .await;
    assert!(reply["result"].is_string(), "{reply}");
}
