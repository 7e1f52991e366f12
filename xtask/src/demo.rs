//! placeholder
pub fn run() -> anyhow::Result<()> { anyhow::bail!("the demo is not built yet") }
