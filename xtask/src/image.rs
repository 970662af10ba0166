//! `cargo xtask image`: not built yet.

pub fn run(_args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask image` is not implemented yet")
}
