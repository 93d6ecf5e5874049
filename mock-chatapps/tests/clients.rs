//! The chosen Discord libraries against the mocks on loopback: twilight's shard
//! identifies, heartbeats, follows op 7 with a resume and receives messages; twilight's
//! REST client hits a per-route 429, waits out `retry_after` and retries by itself.
//! (Slack needs no library: `tests/mocks.rs` posts with reqwest.)

use std::time::Duration;

use mock_chatapps::discord::{DiscordMock, GatewayFault, RateLimitFault};
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::id::Id;

const TOKEN: &str = "mock-bot-token";
const APP: &str = "1100000000000000000";
const WAIT: Duration = Duration::from_secs(20);

async fn next(shard: &mut Shard) -> Event {
    tokio::time::timeout(WAIT, shard.next_event(EventTypeFlags::all()))
        .await
        .expect("an event in time")
        .expect("the shard runs")
        .expect("a well-formed event")
}

async fn until(shard: &mut Shard, mut wanted: impl FnMut(&Event) -> bool) -> Event {
    loop {
        let event = next(shard).await;
        if wanted(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn twilight_shard_identifies_heartbeats_and_resumes_after_op7() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_millis(300))
        .await
        .unwrap();
    let config = ConfigBuilder::new(
        TOKEN.to_owned(),
        Intents::GUILD_MESSAGES | Intents::DIRECT_MESSAGES | Intents::MESSAGE_CONTENT,
    )
    .proxy_url(mock.gateway_url())
    .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);

    let Event::Ready(ready) = until(&mut shard, |e| matches!(e, Event::Ready(_))).await else {
        unreachable!()
    };
    assert_eq!(ready.application.id.get(), 1_100_000_000_000_000_000);
    until(&mut shard, |e| matches!(e, Event::GatewayHeartbeatAck)).await;
    assert!(mock.gateway_counts().heartbeats >= 1);

    mock.gateway_fault(GatewayFault::Reconnect).unwrap();
    until(&mut shard, |e| matches!(e, Event::Resumed)).await;
    let counts = mock.gateway_counts();
    assert_eq!(
        (counts.identifies, counts.resumes, counts.connections),
        (1, 1, 2)
    );

    mock.user_message(
        Some("1000000000000000001"),
        "1000000000000000002",
        "hello",
        true,
    )
    .unwrap();
    let Event::MessageCreate(m) = until(&mut shard, |e| matches!(e, Event::MessageCreate(_))).await
    else {
        unreachable!()
    };
    assert_eq!(m.content, "hello");
    assert_eq!(m.mentions[0].id.get(), 1_100_000_000_000_000_001);

    // A dropped connection is resumed as well.
    mock.gateway_fault(GatewayFault::Drop).unwrap();
    until(&mut shard, |e| matches!(e, Event::Resumed)).await;
    assert_eq!(mock.gateway_counts().resumes, 2);
}

#[tokio::test]
async fn twilight_http_waits_out_a_429_and_then_replies() {
    let mock = DiscordMock::start(TOKEN, APP, Duration::from_secs(45))
        .await
        .unwrap();
    let client = twilight_http::Client::builder()
        .token(TOKEN.to_owned())
        .proxy(mock.rest_addr().to_string(), true)
        .build();
    let channel = Id::new(1_000_000_000_000_000_002);
    let original = Id::new(1_200_000_000_000_000_009);
    mock.rate_limit(
        "POST /channels/{id}/messages",
        RateLimitFault {
            retry_after: 0.5,
            global: false,
        },
    );

    // twilight-http retries the 429 itself after `retry_after`; the caller sees one
    // successful reply.
    let message = client
        .create_message(channel)
        .content("answer")
        .reply(original)
        .await
        .expect("the retried request succeeds")
        .model()
        .await
        .expect("a message body");
    assert_eq!(message.content, "answer");

    let posts = mock.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].reply_to.as_deref(), Some("1200000000000000009"));
    let requests = mock.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(
        waited >= Duration::from_millis(450),
        "the client waited only {waited:?} after retry_after 0.5"
    );

    client.create_typing_trigger(channel).await.expect("typing");
    assert_eq!(mock.typing().len(), 1);
}
