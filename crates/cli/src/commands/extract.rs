//! `patchtcga extract`: joins a split download and unpacks it safely.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use patchtcga_dataset::archive;

/// Options of `patchtcga extract`.
#[derive(Args)]
pub struct ExtractArgs {
    /// Path prefix of the parts, e.g. downloads/PTCGA200_p_ (every file starting with it, in name order).
    pub prefix: PathBuf,
    /// Folder to unpack into.
    #[arg(long)]
    pub out: PathBuf,
    /// MD5 list of the parts and/or the joined archive; checked before unpacking.
    #[arg(long)]
    md5: Option<PathBuf>,
    /// Name of the joined archive in the MD5 list.
    #[arg(long, default_value = "PTCGA200.tar.gz")]
    pub joined_name: String,
}

/// Joins the parts in name order, checks their MD5s first if given, and unpacks.
pub fn extract(a: ExtractArgs) -> Result<()> {
    let parts = archive::find_parts(&a.prefix)?;
    let names: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
    println!("joining {} part(s): {}", parts.len(), names.join(", "));
    let md5 = a.md5.as_deref().map(|m| (m, a.joined_name.as_str()));
    let report = archive::extract(&parts, &a.out, md5, &super::bytes_bar())?;
    println!("unpacked {} files ({} bytes) into {}", report.files, report.bytes, a.out.display());
    Ok(())
}
