//! `tracewire keygen`: a new static key pair for an exec-server behind a relay.

use std::path::PathBuf;

use anyhow::Result;

/// `tracewire keygen`'s arguments.
#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the private key to `--out` (mode 0600) and the public key to `--out`.pub.
pub(crate) fn run(args: &KeygenArgs) -> Result<i32> {
    let kp = tracewire_relay::Keypair::generate()?;
    kp.write(&args.out)?;
    eprintln!(
        "wrote {} (private, mode 0600) and {}",
        args.out.display(),
        tracewire_relay::public_path(&args.out).display()
    );
    Ok(0)
}
