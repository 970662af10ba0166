//! `cargo xtask hostvm`: not built yet.

pub fn run(_args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask hostvm` is not implemented yet")
}
