use clap::Args;
use super::Report;
#[derive(Debug, Args, Default)]
pub struct MqttArgs {}
pub async fn run(_a: MqttArgs, _quick: bool) -> Result<Report, String> { Err("todo".into()) }
