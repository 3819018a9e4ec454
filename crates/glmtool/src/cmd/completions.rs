//! `glmtool completions SHELL` and `glmtool man`: generated from the same clap definitions as
//! the parser, so they never go stale.

use anyhow::Result;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(a: Args, mut cmd: clap::Command) -> Result<()> {
    // generated into memory first: clap_complete panics on a write error (a closed pipe)
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "glmtool", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)?;
    Ok(())
}

pub fn man(cmd: clap::Command) -> Result<()> {
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
    Ok(())
}
