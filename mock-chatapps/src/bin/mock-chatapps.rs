//! Runs mock Discord and Slack servers on loopback and prints their addresses, for
//! trying a bot by hand. Tokens come from the environment (defaults are test values).

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let discord_token =
        std::env::var("MOCK_DISCORD_TOKEN").unwrap_or_else(|_| "mock-discord-token".into());
    let slack_bot = std::env::var("MOCK_SLACK_BOT_TOKEN").unwrap_or_else(|_| "xoxb-mock".into());
    let slack_app = std::env::var("MOCK_SLACK_APP_TOKEN").unwrap_or_else(|_| "xapp-mock".into());
    let discord = mock_chatapps::discord::DiscordMock::start(
        &discord_token,
        "1100000000000000000",
        Duration::from_millis(41_250),
    )
    .await?;
    let slack = mock_chatapps::slack::SlackMock::start(&slack_bot, &slack_app).await?;
    println!("discord gateway: {}", discord.gateway_url());
    println!("discord rest:    http://{}/api/v10", discord.rest_addr());
    println!("slack web api:   {}", slack.api_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
