use clap::Args;
use super::Report;
#[derive(Debug, Args, Default)]
pub struct ConsumerArgs {}
pub async fn run(_a: ConsumerArgs, _quick: bool) -> Result<Report, String> { Err("todo".into()) }
